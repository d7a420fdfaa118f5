"""dockvols guest side: the Docker VolumeDriver plugin."""

from dockvols_common import __version__

__all__ = ["__version__"]
