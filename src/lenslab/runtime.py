"""Process set-up shared by every pipeline script: threads, seeds, quiet libraries."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_THREADS = 2


def compute_threads() -> int:
    """Torch threads of every pipeline job: ``LENSLAB_THREADS`` or 2.

    Not the scheduler's count: float reductions split over a different number of threads round
    differently, and results must not depend on ``snakemake --cores``."""
    value = os.environ.get("LENSLAB_THREADS", str(DEFAULT_THREADS))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"LENSLAB_THREADS must be a positive integer, got {value!r}")
    return int(value)


def setup(threads: int | None = None, seed: int = 0) -> None:
    """Fix thread count and seeds so that one config always gives the same bytes.
    ``threads`` None: :func:`compute_threads`."""
    torch.set_num_threads(compute_threads() if threads is None else max(1, int(threads)))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
