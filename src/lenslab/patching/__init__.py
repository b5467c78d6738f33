"""Activation patching and causal tracing (F13; Meng et al. 2022).

- :mod:`lenslab.patching.run`: :class:`Patch`, :class:`Patcher` (batched suffix runner with a
  full-forward fallback), :func:`window_layers`.
- :mod:`lenslab.patching.corrupt`: clean/corrupt pairs and ROME embedding noise (:class:`Case`).
- :mod:`lenslab.patching.metrics`: probability, logit difference, normalised score, token
  categories, category means with confidence intervals.
- :mod:`lenslab.patching.sweep`: the whole (kind, layer, position, window) sweep as a table.
- :mod:`lenslab.patching.reference`: the naive one-forward-per-patch loop (tests, benchmark).
"""

from lenslab.patching.config import PatchingConfig, parse_config
from lenslab.patching.corrupt import Case, noise_cases, pair_cases
from lenslab.patching.metrics import METRICS, category_means, token_categories
from lenslab.patching.run import KINDS, Patch, Patcher, window_layers
from lenslab.patching.sweep import patch_case, run_patching, sweep_cells

__all__ = [
    "KINDS",
    "METRICS",
    "Case",
    "Patch",
    "Patcher",
    "PatchingConfig",
    "category_means",
    "noise_cases",
    "pair_cases",
    "parse_config",
    "patch_case",
    "run_patching",
    "sweep_cells",
    "token_categories",
    "window_layers",
]
