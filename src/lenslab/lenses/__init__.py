"""Lenses: transform a hidden state at layer l, then decode with the final norm and unembedding."""

from lenslab.lenses.base import Lens
from lenslab.lenses.logit import LogitLens

__all__ = ["Lens", "LogitLens"]
