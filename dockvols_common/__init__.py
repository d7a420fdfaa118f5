"""What both halves of dockvols share and nothing else (standard library only).

plugin/ (guest) and esx_service/ (host, ESXi's Python) import this package and never each
other, so the managed plugin image carries neither pyVmomi nor the admin tools.
"""

# The one version of dockvols: both halves (which speak one protocol), the package's metadata
# (pyproject.toml reads it) and the plugin image.
__version__ = "0.1.0"
