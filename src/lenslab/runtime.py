"""Process set-up shared by every pipeline script: threads, seeds, quiet libraries."""

from __future__ import annotations

import os
import random

import numpy as np

DEFAULT_THREADS = 2


def compute_threads() -> int:
    """Torch threads of every pipeline job: ``LENSLAB_THREADS`` or 2.

    Not the scheduler's count: float reductions split over a different number of threads round
    differently, and results must not depend on ``snakemake --cores``."""
    value = os.environ.get("LENSLAB_THREADS", str(DEFAULT_THREADS))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"LENSLAB_THREADS must be a positive integer, got {value!r}")
    return int(value)


def setup(threads: int | None = None, seed: int = 0, *, uses_torch: bool = True) -> None:
    """Fix thread count and seeds so that one config always gives the same bytes.
    ``threads`` None: :func:`compute_threads`. ``uses_torch`` False (jobs that only read tables
    and draw): seed ``random`` and numpy only, without importing torch (about 1.5 s a job)."""
    random.seed(seed)
    np.random.seed(seed)
    if uses_torch:
        import torch

        torch.set_num_threads(compute_threads() if threads is None else max(1, int(threads)))
        torch.manual_seed(seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
