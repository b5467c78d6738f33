"""The patchscope intervention (Ghandeharioun et al. 2024), batched.

A patchscope is ``(S, i, M, l) -> (T, i*, f, M*, l*)``: take the residual state ``resid[l]`` at
position ``i`` of source prompt ``S`` run by model ``M``, map it with ``f`` (identity by
default), write it over ``resid[l*]`` at position ``i*`` of target prompt ``T`` run by ``M*``,
and read the patched run (its logits, or a greedy generation).

Layers use the adapter's residual numbering: ``resid[0]`` is the input of block 0, ``resid[l]``
the output of block ``l-1``, ``resid[L]`` the state before the final norm. Writing ``resid[l*]``
therefore replaces the output of block ``l*-1`` (or the input of block 0 for ``l* = 0``).

Batching: every patched variant of one target prompt is a row of one batch; a hook on each
target layer that occurs writes the rows assigned to it, so one forward pass serves any mix of
target layers (chunked by ``batch_size`` rows to bound memory).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter, output_cache

Mapping = Callable[[Tensor], Tensor]


def check_position(position: int, length: int, what: str) -> int:
    """A token position inside a prompt of ``length`` tokens (negative counts from the end)."""
    if not -length <= position < length:
        raise LensLabError(
            f"{what} position {position} is outside the prompt ({length} tokens)",
            fix=f"choose a position between 0 and {length - 1} (or -1 for the last token)",
        )
    return position % length


@torch.no_grad()
def source_run(adapter: ModelAdapter, ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The unpatched source run: logits ``[T, V]`` and residual stream ``[L+1, T, D]``."""
    if not ids:
        raise LensLabError("the source prompt has no tokens", fix="give it some text")
    x = torch.tensor([list(ids)], device=adapter.device)
    logits, resid = adapter.run_with_resid(x)
    return logits[0], resid[:, 0]


@contextlib.contextmanager
def write_resid(
    adapter: ModelAdapter, rows_by_layer: dict[int, tuple[Tensor, Tensor]], position: int
) -> Iterator[None]:
    """During forwards inside the block, overwrite ``resid[l]`` at ``position`` for the batch
    rows ``rows`` with ``vectors`` (``rows_by_layer[l] = (rows, vectors)``)."""

    def put(h: Tensor, rows: Tensor, vectors: Tensor) -> Tensor:
        h = h.clone()
        h[rows.to(h.device), position] = vectors.to(h.device, h.dtype)
        return h

    handles = []
    for layer, (rows, vectors) in rows_by_layer.items():
        if layer == 0:

            def pre(_mod, args, kwargs, rows=rows, vectors=vectors):
                if args:
                    return (put(args[0], rows, vectors), *args[1:]), kwargs
                return args, {
                    **kwargs,
                    "hidden_states": put(kwargs["hidden_states"], rows, vectors),
                }

            handles.append(adapter.blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(_mod, _args, output, rows=rows, vectors=vectors):
                if isinstance(output, tuple):
                    return (put(output[0], rows, vectors), *output[1:])
                return put(output, rows, vectors)

            handles.append(adapter.blocks[layer - 1].register_forward_hook(post))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _group(layers: Tensor, vectors: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
    groups = {}
    for layer in sorted(set(layers.tolist())):
        rows = torch.nonzero(layers == layer).flatten()
        groups[int(layer)] = (rows, vectors[rows])
    return groups


def _check_rows(adapter: ModelAdapter, layers: Sequence[int], vectors: Tensor) -> Tensor:
    if vectors.ndim != 2 or vectors.shape[0] != len(layers):
        raise LensLabError(
            f"patch vectors have shape {tuple(vectors.shape)} for {len(layers)} target layers",
            fix="pass one [D] vector per target layer, stacked as [N, D]",
        )
    if vectors.shape[1] != adapter.d_model:
        raise LensLabError(
            f"patch vectors have width {vectors.shape[1]}, the target model {adapter.d_model}",
            fix="map the source states into the target model's width first (fit_affine)",
        )
    return torch.tensor([adapter.check_layer(int(x)) for x in layers], dtype=torch.long)


@torch.no_grad()
def patched_logits(
    adapter: ModelAdapter,
    target_ids: Sequence[int],
    position: int,
    layers: Sequence[int],
    vectors: Tensor,
    read_position: int = -1,
    batch_size: int = 64,
    reuse_prefix: bool = True,
) -> Tensor:
    """Logits ``[N, V]`` at ``read_position`` of the target prompt, one row per patch: row ``n``
    writes ``vectors[n]`` over ``resid[layers[n]]`` at ``position``. One forward per chunk of
    ``batch_size`` rows, whatever the mix of layers.

    ``reuse_prefix``: the tokens before ``position`` are the same in every row and a patch
    cannot reach them (causal attention), so they run once and their key/value cache is shared;
    each row then runs only from ``position`` on. Equal to the full forward to float tolerance
    (``False``: full forwards, bit for bit the model's own computation)."""
    n_tok = len(target_ids)
    position = check_position(position, n_tok, "target")
    read_position = check_position(read_position, n_tok, "read")
    if read_position < position:
        raise LensLabError(
            f"read position {read_position} comes before the patched position {position}",
            fix="read at or after the patched position (a patch cannot reach earlier tokens)",
        )
    layer_t = _check_rows(adapter, layers, vectors)
    ids = torch.tensor([list(target_ids)], device=adapter.device)
    prefix = _prefix_cache(adapter, ids, position) if reuse_prefix else None
    start = position if prefix is not None else 0
    out = []
    for c0 in range(0, len(layers), batch_size):
        sl = slice(c0, c0 + batch_size)
        n = len(layer_t[sl])
        rows = _group(layer_t[sl], vectors[sl])
        batch = ids[:, start:].expand(n, -1)
        with write_resid(adapter, rows, position - start):
            if prefix is None:
                logits = _logits_at(adapter, batch, read_position)
            else:
                cache = copy.deepcopy(prefix)
                cache.batch_repeat_interleave(n)
                logits = adapter.model(input_ids=batch, cache=cache, use_cache=True)
                logits = logits.logits[:, read_position - start]
        out.append(logits.float())
    return torch.cat(out) if out else torch.empty(0, adapter.vocab_size)


def _prefix_cache(adapter: ModelAdapter, ids: Tensor, position: int):
    """The key/value cache of the tokens before ``position``, or None where there are none or
    the model does not return a cache that can be repeated over a batch."""
    if position == 0:
        return None
    try:
        out = adapter.model(input_ids=ids[:, :position], use_cache=True)
    except (TypeError, ValueError):
        return None
    cache = output_cache(out)
    return cache if hasattr(cache, "batch_repeat_interleave") else None


def _logits_at(adapter: ModelAdapter, ids: Tensor, position: int) -> Tensor:
    """Logits ``[B, V]`` at one position; at the last, only that position is unembedded
    (:meth:`ModelAdapter.last_logits`), which dominates the cost of a short prompt with a large
    vocabulary."""
    if position == ids.shape[1] - 1:
        return adapter.last_logits(ids)
    return adapter.forward(ids)[:, position]


@torch.no_grad()
def patched_generate(
    adapter: ModelAdapter,
    target_ids: Sequence[int],
    position: int,
    layers: Sequence[int],
    vectors: Tensor,
    max_new_tokens: int = 8,
    batch_size: int = 64,
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy continuation of the patched target prompt, one per row (deterministic: argmax,
    ties to the lowest id). The patch stays in place at ``position`` at every step.

    ``use_cache``: the patched prompt runs once and each new token reuses its keys and values
    (the patch sits inside the prompt, so they are what a rerun would compute). ``False``
    reruns the whole patched sequence for every token: the reference, 10-20x slower at
    GPT-2-XL size."""
    if max_new_tokens < 1:
        raise LensLabError(f"max_new_tokens={max_new_tokens}", fix="ask for at least one token")
    position = check_position(position, len(target_ids), "target")
    layer_t = _check_rows(adapter, layers, vectors)
    generate = _generate_cached if use_cache else _generate_rerun
    out: list[list[int]] = []
    for c0 in range(0, len(layers), batch_size):
        sl = slice(c0, c0 + batch_size)
        rows = _group(layer_t[sl], vectors[sl])
        seq = torch.tensor([list(target_ids)], device=adapter.device).expand(len(layer_t[sl]), -1)
        out += generate(adapter, seq, rows, position, max_new_tokens).tolist()
    return out


@torch.no_grad()
def _generate_cached(adapter, seq: Tensor, rows, position: int, n_new: int) -> Tensor:
    with write_resid(adapter, rows, position):
        step = adapter.model(input_ids=seq, use_cache=True)
    new = [step.logits[:, -1].argmax(-1, keepdim=True)]
    for _ in range(n_new - 1):
        cache = output_cache(step)
        if cache is None:  # a model that returns no cache: rerun the patched sequence
            done = torch.cat([seq, *new], 1)
            more = _generate_rerun(adapter, done, rows, position, n_new - len(new))
            return torch.cat([*new, more], dim=1)
        step = adapter.model(input_ids=new[-1], cache=cache, use_cache=True)
        new.append(step.logits[:, -1].argmax(-1, keepdim=True))
    return torch.cat(new, dim=1)


@torch.no_grad()
def _generate_rerun(adapter, seq: Tensor, rows, position: int, n_new: int) -> Tensor:
    n_prompt = seq.shape[1]
    with write_resid(adapter, rows, position):
        for _ in range(n_new):
            nxt = adapter.forward(seq)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    return seq[:, n_prompt:]


def identity(h: Tensor) -> Tensor:
    return h
