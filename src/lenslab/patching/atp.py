"""Attribution patching (F13c): first-order estimates of every patch of F13's kind at once.

AtP (Nanda 2023) estimates the effect of restoring node ``n`` from the clean run into the
corrupted run (F13's direction) on the logit difference ``M = logit(clean answer) -
logit(corrupt answer)`` at the last position as

    c_AtP(n) = (n(x_clean) - n(x_corrupt)) . dM/dn |_(x_corrupt)

from one clean forward, one corrupted forward and one backward pass, for every node:

``head``
    one attention head's output at one position (its slice of the attention output
    projection's input, as the exact ``head`` patch restores it);
``mlp``
    the MLP output at one position (``adapter.mlp(l)``);
``resid``
    the block output ``resid[l+1]`` at one position.

The gradient with respect to every node comes from zero tensors added to the activations
(leaves that require grad), so a block that edits a sublayer's output in place afterwards
(Falcon) cannot change what the gradient is taken of.

AtP*'s GradDrop (Kramar et al. 2024) addresses cancellation between a node's direct and
indirect paths: for each block ``l`` one more backward pass runs with the gradient into that
block's attention and MLP terms set to zero (the residual skip still carries it), and

    c_GradDrop(n) = 1 / (L - 1) * sum_l |c_AtP+GD_l(n)|

an unsigned magnitude, compared with ``|exact|``. (The backward with the node's own block
dropped gives 0 for its heads and MLP, hence ``L - 1``.) The QK fix of AtP* concerns nodes
that *are* queries or keys; the nodes here are head outputs, which enter the residual stream
linearly, so the fix does not apply to them (docs/atp.md).

Runs of equal token length are stacked along the batch (``batch_size`` rows per forward and
backward), so memory is bounded by one batch's graph, whatever the prompt count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lenslab.models.adapter import ModelAdapter
from lenslab.patching.run import _head_splits, _hook, _input_hook, add_embedding_noise

NODE_KINDS = ("head", "mlp", "resid")


@dataclass(frozen=True)
class Run:
    """One corrupted run and the clean run it is compared with (token ids, no batch axis)."""

    clean_ids: tuple[int, ...]
    corrupt_ids: tuple[int, ...]
    clean_answer: int
    corrupt_answer: int
    noise: Tensor | None = None  # [T, D] embedding noise of a noise-mode sample


@dataclass
class Estimates:
    """Per run: ``head`` [L, H, T] (NaN in blocks without heads), ``mlp`` and ``resid``
    [L, T]; ``atp`` signed, ``graddrop`` the unsigned AtP* magnitude (None when not run)."""

    atp: dict[str, Tensor]
    graddrop: dict[str, Tensor] | None


class _GradGate(torch.autograd.Function):
    """Identity forward; backward passes the gradient unless ``holder['drop']`` is its block."""

    @staticmethod
    def forward(ctx, x: Tensor, holder: dict, layer: int) -> Tensor:  # type: ignore[override]
        ctx.holder, ctx.layer = holder, layer
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        drop = ctx.holder.get("drop") == ctx.layer
        return (torch.zeros_like(grad) if drop else grad), None, None


def _as_btd(x: Tensor, batch: int, n_tokens: int) -> Tensor:
    """A module output as [B, T, D] (OPT's fc2 sees tokens flattened to [B*T, D])."""
    return x.reshape(batch, n_tokens, x.shape[-1])


@contextlib.contextmanager
def _instrument(
    adapter: ModelAdapter,
    shape: tuple[int, int],
    acts: dict,
    deltas: dict | None = None,
    holder: dict | None = None,
) -> Iterator[None]:
    """Record every node's activation into ``acts`` ((kind, layer) -> [B, T, d]); with
    ``deltas``, add them to the activations (the gradient handles); with ``holder``, gate the
    gradient into each block's attention and MLP terms (GradDrop)."""
    B, T = shape
    splits = _head_splits(adapter)

    def node(key):
        def fn(x):
            acts[key] = _as_btd(x, B, T).detach().clone()
            if deltas is None:
                return None
            return x + deltas[key].reshape(x.shape)

        return fn

    def gate(layer):
        return lambda x: _GradGate.apply(x, holder, layer)

    with contextlib.ExitStack() as stack:
        for layer in range(adapter.n_layers):
            if layer in splits:
                stack.enter_context(_input_hook(splits[layer][0], node(("head", layer))))
            stack.enter_context(_hook(adapter.mlp(layer), node(("mlp", layer))))
            if holder is not None:
                terms = {adapter.attn_term(layer), adapter.mlp_term(layer)}
                for module in terms:
                    stack.enter_context(_hook(module, gate(layer)))
            stack.enter_context(_hook(adapter.blocks[layer], node(("resid", layer))))
        yield


def _node_keys(adapter: ModelAdapter) -> list[tuple[str, int]]:
    heads = [("head", j) for j in _head_splits(adapter)]
    rest = [(k, j) for k in ("mlp", "resid") for j in range(adapter.n_layers)]
    return heads + rest


def _combine(adapter: ModelAdapter, keys, grads, clean: dict, corrupt: dict) -> dict[str, Tensor]:
    """(clean - corrupt) . gradient per node: head [B, L, H, T], mlp / resid [B, L, T]."""
    L, H = adapter.n_layers, None
    B, T = next(iter(corrupt.values())).shape[:2]
    out = {
        "mlp": torch.zeros(B, L, T, dtype=torch.float64),
        "resid": torch.zeros(B, L, T, dtype=torch.float64),
    }
    splits = _head_splits(adapter)
    if splits:
        H = adapter.n_heads()
        out["head"] = torch.full((B, L, H, T), float("nan"), dtype=torch.float64)
    for key, grad in zip(keys, grads, strict=True):
        kind, layer = key
        diff = (clean[key] - corrupt[key]).double()
        g = torch.zeros_like(diff) if grad is None else grad.double().reshape(diff.shape)
        if kind == "head":
            width = splits[layer][2]
            per_head = (diff * g).reshape(B, T, H, width).sum(-1)  # [B, T, H]
            out["head"][:, layer] = per_head.transpose(1, 2).cpu()
        else:
            out[kind][:, layer] = (diff * g).sum(-1).cpu()
    return out


def estimate_batch(adapter: ModelAdapter, runs: list[Run], graddrop: bool = True) -> Estimates:
    """AtP (and GradDrop) of every node for runs of one token length, in one batch."""
    dev = adapter.device
    clean_ids = torch.tensor([r.clean_ids for r in runs], device=dev)
    corrupt_ids = torch.tensor([r.corrupt_ids for r in runs], device=dev)
    B, T = corrupt_ids.shape
    noise = None
    if any(r.noise is not None for r in runs):
        zero = torch.zeros(T, adapter.d_embed)
        noise = torch.stack([zero if r.noise is None else r.noise for r in runs]).to(dev)
    clean: dict = {}
    with torch.no_grad(), _instrument(adapter, (B, T), clean):
        adapter.model(input_ids=clean_ids, use_cache=False)
    keys = _node_keys(adapter)
    dtype = adapter.unembed.weight.dtype
    deltas = {
        k: torch.zeros(B, T, clean[k].shape[-1], device=dev, dtype=dtype, requires_grad=True)
        for k in keys
    }
    corrupt: dict = {}
    holder: dict = {"drop": None}
    with (
        torch.enable_grad(),
        add_embedding_noise(adapter, noise),
        _instrument(adapter, (B, T), corrupt, deltas, holder if graddrop else None),
    ):
        logits = adapter.model(input_ids=corrupt_ids, use_cache=False).logits[:, -1].float()
        rows = torch.arange(B, device=dev)
        good = torch.tensor([r.clean_answer for r in runs], device=dev)
        bad = torch.tensor([r.corrupt_answer for r in runs], device=dev)
        metric = (logits[rows, good] - logits[rows, bad]).sum()  # rows are independent
        inputs = [deltas[k] for k in keys]
        grads = torch.autograd.grad(metric, inputs, retain_graph=graddrop, allow_unused=True)
        atp = _combine(adapter, keys, grads, clean, corrupt)
        drop = (
            _graddrop(adapter, metric, keys, deltas, holder, atp, clean, corrupt)
            if graddrop
            else None
        )
    return Estimates(atp, drop)


def _graddrop(adapter, metric, keys, deltas, holder, atp, clean, corrupt) -> dict[str, Tensor]:
    """``1 / (L - 1) sum_l |c_AtP+GD_l|``. Dropping block ``l``'s terms leaves the gradient of
    every node above block ``l`` unchanged (their gradient comes from later blocks only) and
    zeroes that of block ``l``'s own heads and MLP; only nodes below ``l`` need a backward
    pass, which stops at the lowest of them (half the work of full passes, on average)."""
    L = adapter.n_layers
    total = {k: torch.zeros_like(v) for k, v in atp.items()}
    for layer in range(L):
        for kind, value in atp.items():  # nodes at or above the dropped block
            part = value[:, layer + 1 :].abs()
            total[kind][:, layer + 1 :] += torch.nan_to_num(part) if kind == "head" else part
            if kind == "resid":  # the block output is downstream of the dropped terms
                total[kind][:, layer] += value[:, layer].abs()
        below = [k for k in keys if k[1] < layer]
        if not below:
            continue
        holder["drop"] = layer
        grads = torch.autograd.grad(
            metric, [deltas[k] for k in below], retain_graph=True, allow_unused=True
        )
        part = _combine(adapter, below, grads, clean, corrupt)
        for kind, value in part.items():
            total[kind][:, :layer] += torch.nan_to_num(value[:, :layer].abs())
    holder["drop"] = None
    out = {k: v / max(L - 1, 1) for k, v in total.items()}
    if "head" in out:  # blocks without heads stay NaN
        out["head"][torch.isnan(atp["head"])] = float("nan")
    return out


def estimate(
    adapter: ModelAdapter, runs: list[Run], batch_size: int = 8, graddrop: bool = True
) -> list[Estimates]:
    """Estimates of every run (in order), batching runs of equal token length."""
    by_length: dict[int, list[int]] = {}
    for i, r in enumerate(runs):
        by_length.setdefault(len(r.corrupt_ids), []).append(i)
    out: list[Estimates | None] = [None] * len(runs)
    for rows in by_length.values():
        for c in range(0, len(rows), batch_size):
            chunk = rows[c : c + batch_size]
            est = estimate_batch(adapter, [runs[i] for i in chunk], graddrop)
            for b, i in enumerate(chunk):
                out[i] = Estimates(
                    {k: v[b] for k, v in est.atp.items()},
                    None if est.graddrop is None else {k: v[b] for k, v in est.graddrop.items()},
                )
    return out  # type: ignore[return-value]
