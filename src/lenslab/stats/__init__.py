"""Statistics of lenses: streamed per-(layer, position) tables and their aggregates.

Names are imported lazily, so ``lenslab.stats.config`` (used when Snakemake parses the rules)
does not pull in torch.
"""

from lenslab.lazy import lazy_getattr

_LAZY = {
    "LensConfig": "lenslab.stats.config",
    "parse_lens_config": "lenslab.stats.config",
    "PromptStats": "lenslab.stats.lens_stats",
    "apply_lens": "lenslab.stats.lens_stats",
    "prompt_stats": "lenslab.stats.lens_stats",
    "stats_frames": "lenslab.stats.lens_stats",
    "layer_means": "lenslab.stats.aggregate",
    "compare_lenses": "lenslab.stats.aggregate",
    "target_means": "lenslab.stats.aggregate",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_getattr(__name__, _LAZY)
