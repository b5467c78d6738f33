"""Held-out comparison of the logit, tuned and J-lens (F18, findings).

Per lens and layer, over every position of every evaluation window that has a next token:
KL(final || lens) in nats per token (exact log-softmax, as F7), and top-1 agreement, the share
of positions where the lens's top-1 token is the model's own top-1. Confidence intervals are
percentile bootstraps over windows (:func:`~lenslab.lenses.tuned_eval.bootstrap_ratio`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lenslab.lenses.base import Lens
from lenslab.lenses.jacobian_config import JEvalSettings
from lenslab.lenses.tuned_eval import bootstrap_ratio, evaluate_lenses
from lenslab.models.adapter import ModelAdapter


@torch.no_grad()
def top1_counts(
    adapter: ModelAdapter, lenses: dict[str, Lens], windows: Tensor, micro_batch: int = 32
) -> Tensor:
    """``[W, lenses, L+1]``: per window, positions 0..T-2 where lens and model agree on top-1."""
    out = []
    for chunk in windows.split(micro_batch):
        logits, resid = adapter.run_with_resid(chunk.to(adapter.device))
        final = logits[:, :-1].argmax(-1)
        per_lens = [
            torch.stack(
                [
                    (lens.logits(resid[layer][:, :-1], layer).argmax(-1) == final).sum(1)
                    for layer in range(adapter.n_layers + 1)
                ],
                dim=1,
            )
            for lens in lenses.values()
        ]
        out.append(torch.stack(per_lens, dim=1).double().cpu())
    return torch.cat(out)


def compare_lenses(
    adapter: ModelAdapter, lenses: dict[str, Lens], windows: Tensor, settings: JEvalSettings
) -> pd.DataFrame:
    """Tidy table: lens, layer, metric (kl, ce, entropy, top1), unit, value, ci_low, ci_high, ..."""
    windows = windows[: settings.max_windows]
    table = evaluate_lenses(adapter, lenses, windows, settings)
    table = table[table.unit == "nats_per_token"]
    counts = top1_counts(adapter, lenses, windows, settings.micro_batch)  # [W, K, L+1]
    n_w, n_lens, n_layer = counts.shape
    tokens = np.full(n_w, windows.shape[1] - 1, dtype=np.float64)
    s = settings
    value, low, high = bootstrap_ratio(
        counts.reshape(n_w, -1).numpy(), tokens, s.bootstrap, s.ci, s.seed
    )
    rows = []
    for k, name in enumerate(lenses):
        for layer in range(n_layer):
            i = k * n_layer + layer
            rows.append((name, layer, "top1", "share", value[i], low[i], high[i]))
    columns = ["lens", "layer", "metric", "unit", "value", "ci_low", "ci_high"]
    top1 = pd.DataFrame(rows, columns=columns)
    for col in ("n_windows", "n_tokens", "n_bytes", "ci_level"):
        top1[col] = table[col].iloc[0]
    return pd.concat([table, top1], ignore_index=True)
