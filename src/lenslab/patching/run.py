"""Batched activation patching: restore clean states into corrupted runs, many patches at once.

A *patch* restores the clean value of one kind of state at a set of (layer, position) cells:

``resid``
    the residual stream after block ``l`` (``resid[l+1]``, the block output);
``attn`` / ``mlp``
    the first output of ``adapter.attn(l)`` / ``adapter.mlp(l)`` (what the block adds to the
    residual stream, or feeds to its second half);
``head``
    one attention head's output: its slice of the input of block ``l``'s attention output
    projection (``adapter.head_split``), at the patch's positions, for the patch's ``heads``.

Two runners compute the patched logits at the last position, and agree value for value:

``suffix`` (fast)
    A patch whose lowest layer is ``s`` leaves ``resid[0..s]`` of the corrupted run untouched,
    so it starts from the cached corrupt ``resid[s]`` and calls only blocks ``s..L-1``. The
    block calls replay the positional and keyword arguments the model itself passed to each
    block in a traced forward (attention mask, ``position_ids``, rotary ``position_embeddings``
    for Llama / GPT-NeoX style models, ...), so no architecture's signature is hard-coded.
    Patched variants are stacked along the batch dimension, sorted by start layer; a row joins
    the running batch when its start layer is reached, so every row computes only its suffix.
``full`` (fallback)
    The whole model forward with hooks, still batched. Used when replaying the blocks does not
    reproduce the model's own forward (checked once per prompt length, see
    :meth:`Patcher.check_suffix`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.patching.config import PATCH_KINDS, RUNNERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patch:
    """Restore the clean ``kind`` state at every (layer, position) in ``layers x positions``.

    ``layers`` index blocks (0..L-1): for ``resid`` layer ``l`` is the block output
    ``resid[l+1]``. ``heads`` (kind ``head`` only) are the query heads restored at every
    (layer, position). An empty patch restores nothing (the corrupted run itself).
    """

    kind: str = "resid"
    layers: tuple[int, ...] = ()
    positions: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()

    def start(self, n_layers: int) -> int:
        """The residual index the run must start from: lower states are the corrupt ones."""
        if not self.layers or not self.positions:
            return n_layers
        return min(self.layers) + (1 if self.kind == "resid" else 0)


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, ...]:
    """ROME's window: ``window`` layers around ``layer``, clipped at 0 and ``L-1``.

    Same rule as ROME's ``trace_important_window``: ``range(l - w//2, l - (-w//2))``, i.e.
    ``l-5 .. l+4`` for ``w = 10`` and just ``l`` for ``w = 1``.
    """
    if window < 1:
        raise LensLabError(f"window {window} is not a layer count", fix="use window >= 1")
    return tuple(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


@dataclass
class Trace:
    """What one unpatched run leaves behind, for one prompt (no batch dimension)."""

    logits: Tensor  # [V] at the last position
    resid: Tensor  # [L+1, T, D]
    attn: Tensor | None = None  # [L, T, D] first output of adapter.attn(l)
    mlp: Tensor | None = None  # [L, T, D]
    # {layer: [T, H * head width]}: the input of each attention output projection
    z: dict[int, Tensor] | None = None


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_first(output: Any, new: Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


def embedding_std(adapter: ModelAdapter) -> float:
    """Standard deviation of the input embedding matrix (every entry): ROME's noise unit."""
    return float(adapter.model.get_input_embeddings().weight.detach().float().std())


@contextlib.contextmanager
def _hook(module: nn.Module, fn) -> Iterator[None]:
    """Forward hook that may replace the module's first output (``fn`` returns it or None)."""

    def hook(_mod, _args, output):
        new = fn(_first(output))
        return None if new is None else _with_first(output, new)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _input_hook(module: nn.Module, fn) -> Iterator[None]:
    """Forward pre-hook that may replace the module's first input (``fn`` returns it or None);
    the output projection of attention sees the heads' outputs as that input."""

    def hook(_mod, args, kwargs):
        x = args[0] if args else kwargs["input"]
        new = fn(x)
        if new is None:
            return None
        return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "input": new})

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _head_splits(adapter: ModelAdapter) -> dict[int, tuple[nn.Module, int, int]]:
    """{block: (output projection, heads, head width)} of every block whose attention splits
    into heads (hybrids' other mixers and unmapped projections are left out)."""
    splits = {}
    for layer in range(adapter.n_layers):
        try:
            splits[layer] = adapter.head_split(layer)
        except LensLabError:
            continue
    return splits


@contextlib.contextmanager
def add_embedding_noise(adapter: ModelAdapter, noise: Tensor | None) -> Iterator[None]:
    """Add ``noise`` ([T, D] or [B, T, D]) to the token-embedding output (ROME corruption)."""
    if noise is None:
        yield
        return
    embed = adapter.model.get_input_embeddings()
    with _hook(embed, lambda out: out + noise.to(out.dtype)):
        yield


class Patcher:
    """Clean and corrupted traces of one prompt, and the runners that patch between them.

    Corruption is either a different prompt of the same token length (``corrupt_ids``) or
    embedding noise, one ``[T, D]`` tensor per sample (``noise`` ``[S, T, D]``); each noise
    sample is its own corrupted run, and patch results are returned per sample.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        clean_ids: list[int] | Tensor,
        corrupt_ids: list[int] | Tensor | None = None,
        noise: Tensor | None = None,
        runner: str = "auto",
        batch_size: int = 64,
    ):
        if (corrupt_ids is None) == (noise is None):
            raise LensLabError(
                "a patching run needs exactly one corruption",
                fix="pass either corrupt_ids (pairs mode) or noise (noise mode)",
            )
        if runner not in RUNNERS:
            raise LensLabError(f"unknown runner {runner!r}", fix=f"use one of {RUNNERS}")
        if batch_size < 1:
            raise LensLabError(f"batch_size={batch_size}", fix="use a batch size >= 1")
        self.adapter = adapter
        self.L = adapter.n_layers
        self.batch_size = batch_size
        dev = adapter.device
        self.clean_ids = torch.as_tensor(clean_ids, dtype=torch.long, device=dev)
        T = len(self.clean_ids)
        if corrupt_ids is not None:
            self.corrupt_ids = torch.as_tensor(corrupt_ids, dtype=torch.long, device=dev)
            if len(self.corrupt_ids) != T:
                raise LensLabError(
                    f"clean ({T} tokens) and corrupt ({len(self.corrupt_ids)} tokens) prompts "
                    "differ in length",
                    fix="patch only pairs of equal token length (align: strict)",
                )
            self.noise = None
        else:
            if noise.ndim != 3 or noise.shape[1:] != (T, adapter.d_embed):
                raise LensLabError(
                    f"noise of shape {tuple(noise.shape)} does not fit a {T}-token prompt",
                    fix=f"give noise as [samples, {T}, {adapter.d_embed}] (the width of the "
                    "token embeddings)",
                )
            self.corrupt_ids = self.clean_ids
            self.noise = noise.to(dev)
        self.head_splits = _head_splits(adapter)
        self.clean, self.block_args = self._trace(self.clean_ids, None, components=True)
        self.corrupt = [
            self._trace(self.corrupt_ids, n, components=False)[0] for n in self._noise_samples()
        ]
        self.runner = self._choose(runner)

    # -- traces ---------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return len(self.corrupt)

    def _noise_samples(self) -> list[Tensor | None]:
        return [None] if self.noise is None else list(self.noise)

    @torch.no_grad()
    def _trace(self, ids: Tensor, noise: Tensor | None, components: bool) -> tuple[Trace, list]:
        """One forward: last-position logits, residual stream, attn/MLP outputs, block args."""
        ad = self.adapter
        resid: list[Tensor] = []
        attn: list[Tensor] = []
        mlp: list[Tensor] = []
        args: list[tuple] = []
        z: dict[int, Tensor] = {}

        def keep(store):
            # OPT's fc2 sees tokens flattened to [B*T, D]: view every output as [B, T, D].
            # Clone: some blocks add into a sublayer's output in place afterwards (Falcon).
            return lambda out: (
                store.append(out.reshape(-1, len(ids), out.shape[-1])[0].clone()) or None
            )

        def keep_z(layer):
            def fn(x):
                z[layer] = x.reshape(-1, len(ids), x.shape[-1])[0].clone()

            return fn

        def pre(_mod, a, kw):
            args.append((a[1:], dict(kw)))

        with contextlib.ExitStack() as stack:
            stack.enter_context(ad.record_resid(resid))
            stack.enter_context(add_embedding_noise(ad, noise))
            handles = [b.register_forward_pre_hook(pre, with_kwargs=True) for b in ad.blocks]
            stack.callback(lambda: [h.remove() for h in handles])
            if components:
                for i in range(self.L):
                    stack.enter_context(_hook(ad.attn(i), keep(attn)))
                    stack.enter_context(_hook(ad.mlp(i), keep(mlp)))
                for i, (proj, _, _) in self.head_splits.items():
                    stack.enter_context(_input_hook(proj, keep_z(i)))
            out = ad.model(input_ids=ids[None], use_cache=False)
        resid_t = torch.stack([r[0] for r in resid])
        trace = Trace(
            logits=out.logits[0, -1],
            resid=resid_t,
            attn=torch.stack(attn) if components else None,
            mlp=torch.stack(mlp) if components else None,
            z=z if components else None,
        )
        return trace, args

    # -- runner choice --------------------------------------------------------------------
    def _choose(self, runner: str) -> str:
        if runner == "full":
            return "full"
        ok, why = self.check_suffix()
        if ok:
            return "suffix"
        if runner == "suffix":
            raise LensLabError(
                f"the suffix runner cannot replay the blocks of {self.adapter.name!r}: {why}",
                fix="set `runner: auto` or `runner: full` in the patching config",
            )
        log.warning(
            "patching %s: suffix runner unavailable (%s); full forwards", self.adapter.name, why
        )
        return "full"

    @torch.no_grad()
    def check_suffix(self) -> tuple[bool, str]:
        """Does replaying the captured block calls on a batch of 2 reproduce resid[1..L], and
        do patched runs through the suffix equal the full hooked forward? (A replay that is
        right on the clean run can still be wrong on a patched one, e.g. when a block's
        captured arguments carry per-token state of the clean prompt.)"""
        h = self.clean.resid[0].expand(2, -1, -1).clone()
        try:
            for j in range(self.L):
                h = self._block(j, h)
                want = self.clean.resid[j + 1]
                # float32 rounding grows with the state's scale: SmolLM2 carries residual
                # entries of 300-22,000 (massive activations at the first position), and a
                # batch of 2 then differs from the clean run by up to ~1e-3 (measured 8.5e-4 at
                # block 10, max |h| 321): the tolerance is relative to the state's largest entry.
                atol = 1e-5 * max(1.0, float(want.abs().max()))
                if not torch.allclose(h, want.expand_as(h), rtol=1e-4, atol=atol):
                    err = (h - want).abs().max().item()
                    return False, f"block {j} output differs by {err:.3g}"
            return self._check_patched()
        except Exception as err:  # noqa: BLE001 - any failure means: do not use this path
            return False, f"{type(err).__name__}: {err}"

    def _check_patched(self) -> tuple[bool, str]:
        """A few patches of each kind through both runners, which must agree."""
        T, mid = len(self.clean_ids), self.L // 2
        patches = [
            Patch("resid", (mid,), (0, T - 1)),
            Patch("attn", (mid,), tuple(range(T))),
            Patch("mlp", (0,), (T - 1,)),
        ]
        if self.head_splits:  # one head at one layer, early positions
            layer = max(self.head_splits)
            patches.append(Patch("head", (layer,), (0, T - 1), (self.head_splits[layer][1] - 1,)))
        n = len(patches)
        ident = lambda x: x  # noqa: E731
        fast = torch.cat([v for _, v in self._run_suffix(patches, [0] * n, ident, -1)])
        order = sorted(range(n), key=lambda k: patches[k].start(self.L))
        full = torch.cat([v for _, v in self._run_full(patches, [0] * n, ident, -1)])[order]
        if not torch.allclose(fast, full, rtol=1e-4, atol=1e-4):
            err = (fast - full).abs().max().item()
            return False, f"patched runs differ from the full forward by {err:.3g}"
        return True, ""

    def _block(self, j: int, h: Tensor) -> Tensor:
        args, kwargs = self.block_args[j]
        return _first(self.adapter.blocks[j](h, *args, **kwargs))

    # -- running patches ------------------------------------------------------------------
    def run(
        self,
        patches: list[Patch],
        samples: list[int] | None = None,
        reduce: Callable[[Tensor], Tensor] | None = None,
        at: int = -1,
    ) -> Tensor:
        """Last-position logits ``[n, V]`` of every (patch, sample) variant.

        ``samples`` gives each patch's corrupted run (noise sample index; 0 in pairs mode);
        None runs every patch on every sample and returns ``[S, n, V]``. ``reduce`` maps each
        batch's logits ``[b, V]`` to ``[b, k]`` (e.g. the two answers' logits), so a big sweep
        never holds ``n x V`` logits at once. ``at`` reads the logits at another position
        (tests use it: a patch never changes earlier positions).
        """
        if samples is None:
            n = len(patches)
            flat = self.run(
                patches * self.n_samples,
                [s for s in range(self.n_samples) for _ in range(n)],
                reduce,
                at,
            )
            return flat.view(self.n_samples, n, -1)
        if not patches:
            return torch.empty(0, 0)
        if len(samples) != len(patches):
            raise LensLabError("one sample index per patch is needed", fix="pass equal lengths")
        for p in patches:
            self._check_patch(p)
        for kind in sorted({p.kind for p in patches}):
            self.adapter.require(f"patch_{kind}")
        for s in samples:
            if not 0 <= s < self.n_samples:
                raise LensLabError(
                    f"sample {s} does not exist ({self.n_samples} corrupted runs)",
                    fix=f"use 0..{self.n_samples - 1}",
                )
        T = len(self.clean_ids)
        if not -T <= at < T:
            raise LensLabError(f"position {at} is outside the {T}-token prompt", fix="use -1")
        reduce = reduce or (lambda logits: logits)
        run = self._run_suffix if self.runner == "suffix" else self._run_full
        parts = list(run(patches, samples, reduce, at))
        out = torch.empty(len(patches), parts[0][1].shape[-1], dtype=parts[0][1].dtype)
        for rows, values in parts:
            out[rows] = values.cpu()
        return out

    def _check_patch(self, p: Patch) -> None:
        if p.kind not in PATCH_KINDS:
            raise LensLabError(f"unknown state kind {p.kind!r}", fix=f"use one of {PATCH_KINDS}")
        if p.kind == "head":
            self._check_heads(p)
        elif p.heads:
            raise LensLabError(f"patch {p} names heads", fix="heads go with kind 'head' only")
        T = len(self.clean_ids)
        bad_l = [i for i in p.layers if not 0 <= i < self.L]
        bad_t = [t for t in p.positions if not 0 <= t < T]
        if bad_l or bad_t:
            raise LensLabError(
                f"patch {p} is outside the model ({self.L} blocks) or prompt ({T} tokens)",
                fix=f"use layers 0..{self.L - 1} and positions 0..{T - 1}",
            )

    def _check_heads(self, p: Patch) -> None:
        no_heads = [i for i in p.layers if i not in self.head_splits]
        if no_heads and all(0 <= i < self.L for i in no_heads):
            self.adapter.head_split(no_heads[0])  # raises the reason
        n = self.adapter.n_heads()
        bad = [h for h in p.heads if not 0 <= h < n]
        if not p.heads or bad:
            raise LensLabError(
                f"head patch {p} names no or unknown heads {bad}",
                fix=f"use heads 0..{n - 1}",
            )

    def _clean_state(self, kind: str, layer: int) -> Tensor:
        """Clean value [T, D] restored by a ``kind`` patch at ``layer``."""
        if kind == "resid":
            return self.clean.resid[layer + 1]
        return getattr(self.clean, kind)[layer]

    def _index(self, patches: list[Patch]) -> dict[tuple[str, int], tuple[Tensor, Tensor]]:
        """(kind, layer) -> (rows, positions) to overwrite, for the rows of one batch."""
        cells: dict[tuple[str, int], list[tuple[int, ...]]] = {}
        for row, p in enumerate(patches):
            for layer in p.layers:
                for t in p.positions:
                    for h in p.heads if p.kind == "head" else (None,):
                        cell = (row, t) if h is None else (row, t, h)
                        cells.setdefault((p.kind, layer), []).append(cell)
        dev = self.adapter.device
        return {
            key: tuple(torch.tensor(col, device=dev) for col in zip(*rc, strict=True))
            for key, rc in cells.items()
        }

    def _restore(self, key: tuple[str, int], index, h: Tensor) -> Tensor | None:
        """``h`` with the clean values written into the batch's patched (row, position) cells."""
        if key not in index:
            return None
        rows, pos = index[key]
        n_rows = h.numel() // (len(self.clean_ids) * h.shape[-1])
        keep = rows < n_rows  # rows that have not joined the batch yet are not patched
        if not bool(keep.any()):
            return None
        rows, pos = rows[keep], pos[keep]
        shape = h.shape  # [B, T, D], or [B*T, D] for modules that flatten tokens (OPT's fc2)
        h = h.reshape(-1, len(self.clean_ids), shape[-1]).clone()
        h[rows, pos] = self._clean_state(*key)[pos].to(h.dtype)
        return h.reshape(shape)

    def _restore_heads(self, layer: int, index, z: Tensor) -> Tensor | None:
        """The projection input ``z`` with the clean heads written into the patched cells."""
        rows, pos, heads = index[("head", layer)]
        T = len(self.clean_ids)
        keep = rows < z.numel() // (T * z.shape[-1])  # rows not yet in the batch: unpatched
        if not bool(keep.any()):
            return None
        rows, pos, heads = rows[keep], pos[keep], heads[keep]
        width = self.head_splits[layer][2]
        cols = heads[:, None] * width + torch.arange(width, device=z.device)  # [n, width]
        shape = z.shape
        z = z.reshape(-1, T, shape[-1]).clone()
        z[rows[:, None], pos[:, None], cols] = self.clean.z[layer][pos[:, None], cols].to(z.dtype)
        return z.reshape(shape)

    @contextlib.contextmanager
    def _component_hooks(self, index, layers: range) -> Iterator[None]:
        ad = self.adapter
        with contextlib.ExitStack() as stack:
            for j in layers:
                for kind, module in (("attn", ad.attn), ("mlp", ad.mlp)):
                    if (kind, j) in index:
                        fn = partial(self._restore, (kind, j), index)
                        stack.enter_context(_hook(module(j), fn))
                if ("head", j) in index:
                    fn = partial(self._restore_heads, j, index)
                    stack.enter_context(_input_hook(self.head_splits[j][0], fn))
            yield

    @torch.no_grad()
    def _run_suffix(self, patches: list[Patch], samples: list[int], reduce, at) -> Iterator[tuple]:
        starts = [p.start(self.L) for p in patches]
        order = sorted(range(len(patches)), key=lambda k: starts[k])
        for c in range(0, len(order), self.batch_size):
            chunk = order[c : c + self.batch_size]
            index = self._index([patches[k] for k in chunk])
            h: Tensor | None = None
            first = starts[chunk[0]]
            with self._component_hooks(index, range(first, self.L)):
                for j in range(first, self.L + 1):
                    # Rows whose patch starts here join with the corrupt state resid[j].
                    new = [k for k in chunk if starts[k] == j]
                    if new:
                        joined = torch.stack([self.corrupt[samples[k]].resid[j] for k in new])
                        h = joined if h is None else torch.cat([h, joined])
                    h = _or(self._restore(("resid", j - 1), index, h), h)
                    if j < self.L:
                        h = self._block(j, h)
            yield chunk, reduce(self.adapter.decode(h[:, at]))

    @torch.no_grad()
    def _run_full(self, patches: list[Patch], samples: list[int], reduce, at) -> Iterator[tuple]:
        ad = self.adapter
        for c in range(0, len(patches), self.batch_size):
            rows = list(range(c, min(c + self.batch_size, len(patches))))
            index = self._index([patches[k] for k in rows])
            noise = None if self.noise is None else self.noise[[samples[k] for k in rows]]
            ids = self.corrupt_ids.expand(len(rows), -1)
            with contextlib.ExitStack() as stack:
                stack.enter_context(add_embedding_noise(ad, noise))
                stack.enter_context(self._component_hooks(index, range(self.L)))
                for j in range(self.L):
                    fn = partial(self._restore, ("resid", j), index)
                    stack.enter_context(_hook(ad.blocks[j], fn))
                logits = ad.model(input_ids=ids, use_cache=False).logits
            yield rows, reduce(logits[:, at])


def _or(value: Tensor | None, default: Tensor) -> Tensor:
    return default if value is None else value
