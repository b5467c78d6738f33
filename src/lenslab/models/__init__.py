"""Loading causal LMs and the architecture adapter every method goes through."""

from lenslab.models.adapter import ModelAdapter
from lenslab.models.load import load_model

__all__ = ["ModelAdapter", "load_model"]
