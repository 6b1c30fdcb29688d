"""facetalk's version, in a module of its own: the watermark and the MP4 metadata carry it
without importing the package root (and whatever the root pulls in)."""

__version__ = "0.1.0"
