"""lenslab: read language-model hidden states through lenses, reproducibly."""

__version__ = "0.1.0"
