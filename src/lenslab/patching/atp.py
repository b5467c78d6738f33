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
    outs: dict | None = None,
) -> Iterator[None]:
    """Record every node's activation into ``acts`` ((kind, layer) -> [B, T, d]); with
    ``deltas``, add them to the activations (the gradient handles) and keep the sums in
    ``outs``; with ``holder``, gate the gradient into each block's attention and MLP terms
    (GradDrop's definition, run literally: the tests check the fast path against it)."""
    B, T = shape
    splits = _head_splits(adapter)

    def node(key):
        def fn(x):
            acts[key] = _as_btd(x, B, T).detach().clone()
            if deltas is None:
                return None
            new = x + deltas[key].reshape(x.shape)
            if outs is not None:
                outs[key] = new
            return new

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


def _last_logits(adapter: ModelAdapter, ids: Tensor) -> Tensor:
    """Logits [B, V] at the last position; the unembedding runs on that position only where
    the model takes ``logits_to_keep`` (its cost at every position would rival the blocks')."""
    try:
        out = adapter.model(input_ids=ids, use_cache=False, logits_to_keep=1)
    except TypeError:
        out = adapter.model(input_ids=ids, use_cache=False)
    return out.logits[:, -1].float()


@contextlib.contextmanager
def _frozen_weights(adapter: ModelAdapter) -> Iterator[None]:
    """No parameter gradients: the graph then keeps only what the node gradients need."""
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


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
        _last_logits(adapter, clean_ids)
    keys = _node_keys(adapter)
    dtype = adapter.unembed.weight.dtype
    deltas = {
        k: torch.zeros(B, T, clean[k].shape[-1], device=dev, dtype=dtype, requires_grad=True)
        for k in keys
    }
    corrupt: dict = {}
    outs: dict = {}
    with (
        torch.enable_grad(),
        _frozen_weights(adapter),
        add_embedding_noise(adapter, noise),
        _instrument(adapter, (B, T), corrupt, deltas, outs=outs),
    ):
        logits = _last_logits(adapter, corrupt_ids)
        rows = torch.arange(B, device=dev)
        good = torch.tensor([r.clean_answer for r in runs], device=dev)
        bad = torch.tensor([r.corrupt_answer for r in runs], device=dev)
        metric = (logits[rows, good] - logits[rows, bad]).sum()  # rows are independent
        inputs = [deltas[k] for k in keys]
        grads = torch.autograd.grad(metric, inputs, retain_graph=graddrop, allow_unused=True)
        atp = _combine(adapter, keys, grads, clean, corrupt)
        drop = None
        if graddrop:
            seeds = {k: g for k, g in zip(keys, grads, strict=True) if k[0] == "resid"}
            drop = _graddrop(adapter, keys, deltas, outs, seeds, atp, clean, corrupt)
    return Estimates(atp, drop)


def _graddrop(adapter, keys, deltas, outs, seeds, atp, clean, corrupt) -> dict[str, Tensor]:
    """``1 / (L - 1) sum_l |c_AtP+GD_l|`` without a backward pass from the metric per block.

    Dropping the gradient into block ``l``'s attention and MLP terms leaves the gradient of
    every node above block ``l`` unchanged, zeroes that of block ``l``'s own heads and MLP,
    and leaves block ``l``'s input with the gradient of its output (the skip path). Since
    everything below block ``l`` reaches the metric only through that input (the residual
    completeness the gate checks), the nodes below get the vector-Jacobian product of the
    lower blocks with that gradient: one backward pass from ``resid[l]`` down, so all L passes
    together cost about L / 2 full backward passes."""
    L = adapter.n_layers
    total = {k: torch.zeros_like(v) for k, v in atp.items()}
    for layer in range(L):
        for kind, value in atp.items():  # nodes above the dropped block: unchanged
            part = value[:, layer + 1 :].abs()
            total[kind][:, layer + 1 :] += torch.nan_to_num(part) if kind == "head" else part
        total["resid"][:, layer] += atp["resid"][:, layer].abs()  # the block's own output
        below = [k for k in keys if k[1] < layer]
        if not below:
            continue
        into = outs[("resid", layer - 1)]  # block ``layer``'s input, as the graph holds it
        seed = seeds[("resid", layer)]
        seed = torch.zeros_like(into) if seed is None else seed.reshape(into.shape)
        grads = torch.autograd.grad(
            into, [deltas[k] for k in below], grad_outputs=seed, retain_graph=True,
            allow_unused=True,
        )  # fmt: skip
        part = _combine(adapter, below, grads, clean, corrupt)
        for kind, value in part.items():
            total[kind][:, :layer] += torch.nan_to_num(value[:, :layer].abs())
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
