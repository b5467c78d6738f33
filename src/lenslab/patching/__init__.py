"""Activation patching and causal tracing (F13; Meng et al. 2022).

- :mod:`lenslab.patching.run`: :class:`Patch`, :class:`Patcher` (batched suffix runner with a
  full-forward fallback), :func:`window_layers`.
- :mod:`lenslab.patching.corrupt`: clean/corrupt pairs and ROME embedding noise (:class:`Case`).
- :mod:`lenslab.patching.metrics`: probability, logit difference, normalised score, token
  categories, category means with confidence intervals.
- :mod:`lenslab.patching.sweep`: the whole (kind, layer, position, window) sweep as a table.
- :mod:`lenslab.patching.reference`: the naive one-forward-per-patch loop (tests, benchmark).

Names are imported lazily, so the F13 figure and findings jobs, which read category means
from :mod:`lenslab.patching.metrics`, do not pull in torch.
"""

from lenslab.lazy import lazy_getattr

_LAZY = {
    "PatchingConfig": "lenslab.patching.config",
    "parse_config": "lenslab.patching.config",
    "Case": "lenslab.patching.corrupt",
    "noise_cases": "lenslab.patching.corrupt",
    "pair_cases": "lenslab.patching.corrupt",
    "METRICS": "lenslab.patching.metrics",
    "category_means": "lenslab.patching.metrics",
    "token_categories": "lenslab.patching.metrics",
    "KINDS": "lenslab.patching.config",
    "Patch": "lenslab.patching.run",
    "Patcher": "lenslab.patching.run",
    "window_layers": "lenslab.patching.run",
    "patch_case": "lenslab.patching.sweep",
    "run_patching": "lenslab.patching.sweep",
    "sweep_cells": "lenslab.patching.sweep",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_getattr(__name__, _LAZY)
