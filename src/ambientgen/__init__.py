"""ambientgen: turn an MP3 collection into new music in the same style."""

__version__ = "0.1.0"
