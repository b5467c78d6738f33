"""Lenses: transform a hidden state at layer l, then decode with the final norm and unembedding.

Names are imported lazily, so ``lenslab.lenses.catalog``'s names and captions (used by figure jobs) do
not pull in torch.
"""

from lenslab.lazy import lazy_getattr

_LAZY = {
    "Lens": "lenslab.lenses.base",
    "LogitLens": "lenslab.lenses.logit",
    "JacobianLens": "lenslab.lenses.jacobian",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_getattr(__name__, _LAZY)
