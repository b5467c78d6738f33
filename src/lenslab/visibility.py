"""Visibility (F15, seed 003): how much each hidden state influences every other one.

For a query state ``h(l, t)`` (``resid[l]`` at position ``t``) take a scalar of it, back-propagate
to every state ``h(l', t')``, and sum the absolute gradient over the hidden dimension. Doing
this for every query cell gives the influence tensor ``V[l, t, l', t']``: ``V[l, t]`` is what
the query sees (earlier states), ``V[:, :, l', t']`` is what the state ``(l', t')`` reaches
(later states). In a causal model the influence from a later position or a later layer is
exactly zero, which :func:`influence` checks.

The scalar is ``sum(|h / ||h||_2|)`` (``normalise=True``, the blog's public code) or
``sum(|h|)``; the author calls the choice unsettled, so it is a parameter.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.prompts import encode_set


def query_scalar(h: Tensor, normalise: bool = True) -> Tensor:
    """The scalar of one hidden state [D] whose gradient defines influence."""
    return (h / h.norm() if normalise else h).abs().sum()


def influence(adapter: ModelAdapter, input_ids: list[int], normalise: bool = True) -> Tensor:
    """``V[l, t, l', t']`` as a float tensor [(L+1), T, (L+1), T] (one backward per query).

    Raises LensLabError if any influence flows from a later position or a later layer: the
    model (or its attention mask) is then not causal and the figure would mislead.
    """
    adapter.require("visibility")
    _, states = adapter.run_with_resid_graph(input_ids)
    n_states, n_pos = len(states), len(input_ids)
    out = torch.zeros(n_states, n_pos, n_states, n_pos)
    for layer in range(n_states):
        for pos in range(n_pos):
            scalar = query_scalar(states[layer][0, pos].float(), normalise)
            grads = torch.autograd.grad(
                scalar, states[: layer + 1], retain_graph=True, allow_unused=True
            )
            for src, g in enumerate(grads):
                if g is not None:
                    out[layer, pos, src] = g[0].float().abs().sum(-1).cpu()
    _check_causal(out)
    return out


def _check_causal(v: Tensor) -> None:
    n_states, n_pos = v.shape[0], v.shape[1]
    pos, layer = torch.arange(n_pos), torch.arange(n_states)
    later_pos = pos[None, :] > pos[:, None]  # [t, t']
    later_layer = layer[None, :] > layer[:, None]  # [l, l']
    backwards = later_pos[None, :, None, :] | later_layer[:, None, :, None]
    worst = float(v[backwards].abs().max()) if backwards.any() else 0.0
    if worst != 0.0:
        raise LensLabError(
            f"influence flows backwards (max {worst:.3g}): a state depends on a later position "
            "or layer",
            fix="check the model's attention mask (a causal LM must not see later tokens)",
        )


def check_query(adapter: ModelAdapter, n_pos: int, layer: int, pos: int) -> tuple[int, int]:
    """Validate a query cell; negative indices count from the end."""
    layer = adapter.check_layer(layer)
    if not -n_pos <= pos < n_pos:
        raise LensLabError(
            f"query position {pos} is out of range for a prompt of {n_pos} tokens",
            fix=f"choose a position between 0 and {n_pos - 1} (or -1 for the last)",
        )
    return layer, pos % n_pos


def visibility_table(
    adapter: ModelAdapter,
    prompt_set,
    prompt_id: str | None = None,
    normalise: bool = True,
    prepend_bos: bool | None = None,
):
    """F15 table for one prompt of the set (the first unless ``prompt_id``): one row per
    (query_layer, query_pos, layer, position) with the summed absolute gradient."""
    prompts = encode_set(adapter.tokenizer, prompt_set, prepend_bos)
    chosen = [p for p in prompts if prompt_id in (None, p.id)]
    if not chosen:
        raise LensLabError(
            f"no prompt {prompt_id!r} in prompt set {prompt_set.get('name', '?')!r}",
            fix=f"choose one of {[p.id for p in prompts]} (figure option `prompt`)",
        )
    p = chosen[0]
    v = influence(adapter, p.input_ids, normalise)
    idx = torch.cartesian_prod(*(torch.arange(n) for n in v.shape))
    table = pd.DataFrame(idx.numpy(), columns=["query_layer", "query_pos", "layer", "position"])
    table["value"] = v.reshape(-1).numpy()
    table.insert(0, "prompt_id", p.id)
    table["token"] = [p.tokens[i] for i in table["position"]]
    table["query_token"] = [p.tokens[i] for i in table["query_pos"]]
    return table
