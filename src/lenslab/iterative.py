"""Residual updates vs gradients (F14, seed 002; Belrose et al. 2023 fig 19).

"Iterative inference": if each block nudges the residual stream downhill on the model's own
loss, the update ``h_{l+1} - h_l`` points along the negative gradient of the final loss with
respect to ``h_l``. Per block and position we measure the cosine between the two. The loss is
the model's next-token cross-entropy summed over the prompt's positions (the last position has
no next token and is left out).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch.nn import functional as F

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.prompts import encode_set


def update_gradient_cosines(adapter: ModelAdapter, input_ids: list[int]) -> torch.Tensor:
    """[L, T-1]: cos(h_{l+1} - h_l, -dLoss/dh_l) for each block l and position t < T-1."""
    if len(input_ids) < 2:
        raise LensLabError(
            "a prompt of one token has no next token to compute a loss on",
            fix="use prompts of at least two tokens for F14",
        )
    adapter.require("iterative")
    logits, states = adapter.run_with_resid_graph(input_ids)
    targets = torch.tensor(input_ids[1:], device=logits.device)
    loss = F.cross_entropy(logits[0, :-1].float(), targets, reduction="sum")
    grads = torch.autograd.grad(loss, states[:-1])
    cosines = []
    for layer, grad in enumerate(grads):
        update = (states[layer + 1] - states[layer])[0, :-1].float()
        cosines.append(F.cosine_similarity(update, -grad[0, :-1].float(), dim=-1))
    return torch.stack(cosines).detach().cpu()


def iterative_table(adapter: ModelAdapter, prompt_set, prepend_bos: bool | None = None):
    """F14 table: one row per (prompt, block, position) with the cosine."""
    rows = []
    for p in encode_set(adapter.tokenizer, prompt_set, prepend_bos):
        cos = update_gradient_cosines(adapter, p.input_ids)
        for layer in range(cos.shape[0]):
            for pos in range(cos.shape[1]):
                rows.append((p.id, layer, pos, p.tokens[pos], float(cos[layer, pos])))
    return pd.DataFrame(rows, columns=["prompt_id", "block", "position", "token", "cosine"])
