"""dockvols host side: owns volume truth on the datastores (stdlib + pyVmomi only)."""

__version__ = "0.1.0"
