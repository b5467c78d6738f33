"""Process set-up shared by every pipeline script: threads, seeds, quiet libraries."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def setup(threads: int = 1, seed: int = 0) -> None:
    """Fix thread count and seeds so that one config always gives the same bytes."""
    torch.set_num_threads(max(1, int(threads)))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
