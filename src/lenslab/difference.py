"""F1: how far apart are the hidden states of two near-identical prompts?

For every residual state and every aligned position: the L2 norm, mean and standard deviation
(over the hidden dimension) of ``h_clean - h_corrupt``. Seed 000 computed these from HF's
``output_hidden_states``, whose last entry is already through the final norm; the table keeps
both readings: rows ``resid 0..L`` (pre-norm, as the adapter names them) and one extra row
``final norm`` = the final norm applied to ``resid L``, which is HF's last entry.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from lenslab.prompts import EncodedPrompt, align_pair

COLUMNS = [
    "pair",
    "row",
    "state",
    "position",
    "clean_position",
    "corrupt_position",
    "clean_token",
    "corrupt_token",
    "l2",
    "mean",
    "std",
]


def state_names(n_layers: int) -> list[str]:
    """Row labels: the embeddings, the output of each block, and the final-normed last state."""
    return ["embed", *[f"block {i}" for i in range(1, n_layers + 1)], "final norm"]


def difference_stats(diff: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """L2 norm, mean and (unbiased, as torch's default in seed 000) std over the last dim."""
    return diff.norm(dim=-1), diff.mean(dim=-1), diff.std(dim=-1)


def pair_difference(
    clean: EncodedPrompt,
    corrupt: EncodedPrompt,
    clean_states: Tensor,
    corrupt_states: Tensor,
    align: str = "strict",
) -> pd.DataFrame:
    """Tidy table for one pair. ``*_states``: ``[L+2, T, D]`` = resid 0..L plus the final-normed
    last state (see :func:`with_final_norm`)."""
    positions = align_pair(clean, corrupt, align)
    ci = torch.tensor([c for c, _ in positions])
    ki = torch.tensor([k for _, k in positions])
    diff = clean_states[:, ci].double() - corrupt_states[:, ki].double()
    l2, mean, std = (t.float() for t in difference_stats(diff))
    names = state_names(clean_states.shape[0] - 2)
    rows = []
    for r, name in enumerate(names):
        for j, (c, k) in enumerate(positions):
            rows.append(
                (
                    f"{clean.id}|{corrupt.id}",
                    r,
                    name,
                    j,
                    c,
                    k,
                    clean.tokens[c],
                    corrupt.tokens[k],
                    l2[r, j].item(),
                    mean[r, j].item(),
                    std[r, j].item(),
                )
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def with_final_norm(resid: Tensor, normalize, dtype: torch.dtype = torch.float32) -> Tensor:
    """Append ``normalize(resid[L])`` as an extra state: ``[L+1, T, D] -> [L+2, T, D]``.

    ``dtype``: the model's, which its norm needs; the states come back in float32 (float64 for
    a float64 model), and :func:`pair_difference` takes differences in float64."""
    out = torch.float64 if dtype == torch.float64 else torch.float32
    with torch.no_grad():
        normed = normalize(resid[-1:].to(dtype))
    return torch.cat([resid.to(out), normed.to(out)])
