"""dockvols guest side: the Docker VolumeDriver plugin."""

__version__ = "0.1.0"
