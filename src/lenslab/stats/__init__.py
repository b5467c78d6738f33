"""Statistics of lenses: streamed per-(layer, position) tables and their aggregates."""

from lenslab.stats.lens_stats import (
    LensConfig,
    PromptStats,
    apply_lens,
    parse_lens_config,
    prompt_stats,
    stats_frames,
)

__all__ = [
    "LensConfig",
    "PromptStats",
    "apply_lens",
    "parse_lens_config",
    "prompt_stats",
    "stats_frames",
]
