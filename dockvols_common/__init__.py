"""What both halves of dockvols share and nothing else (standard library only).

plugin/ (guest) and esx_service/ (host, ESXi's Python) import this package and never each
other, so the managed plugin image carries neither pyVmomi nor the admin tools.
"""
