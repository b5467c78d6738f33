"""The architecture adapter every method goes through, and loading causal LMs.

Names are imported lazily, so the torch-free :mod:`lenslab.models.files` (used when the DAG is
built) does not pull in torch. Pipelines load models through :func:`lenslab.gate.load_model`,
which also runs the fidelity gate.
"""

from lenslab.lazy import lazy_getattr

_LAZY = {"ModelAdapter": "lenslab.models.adapter", "load_model": "lenslab.models.load"}
__all__ = sorted(_LAZY)
__getattr__ = lazy_getattr(__name__, _LAZY)
