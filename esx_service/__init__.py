"""dockvols host side: owns volume truth on the datastores (stdlib + pyVmomi only)."""

from dockvols_common import __version__

__all__ = ["__version__"]
