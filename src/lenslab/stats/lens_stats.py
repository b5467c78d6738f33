"""Streamed lens statistics: one row per (prompt, layer, position), never all logits at once.

For every residual state ``resid[l]`` (l = 0..L) and position ``t`` the lens gives logits
``X[l, t]`` over the vocabulary. This module reduces them to statistics chunk by chunk
(``chunk_layers`` states x ``chunk_positions`` positions) and frees each chunk before the next,
so peak memory is one chunk of logits plus a few per-position references, whatever ``L`` is.

Conventions (also stated in figure captions):

* logarithms are natural (nats); ranks are 1-based: ``rank(tok) = 1 + #{v : X[v] > X[tok]}``,
  so ties get the best rank and the top-1 token always has rank 1;
* "final" is the model's own output distribution, ``softmax(decode(resid[L]))`` with the full
  final norm, whichever lens is applied; "input" is the applied lens at layer 0;
* ``kl_final = KL(final || layer)``, ``kl_input = KL(input || layer)``,
  ``rev_kl_final = KL(layer || final)``, ``js_final`` = Jensen-Shannon divergence (nats, at most
  ln 2); rounding below zero is clamped to 0;
* ``clip_probs`` (default off) clips every probability at ``1 / (10 V)`` inside the KL terms,
  ``sum max(p, c) * (log max(p, c) - log max(q, c))``, as the original logit-lens code did;
  entropy, cross-entropy and JS are never clipped;
* ``mse_logits`` is the mean squared difference of the *mean-centred* logits of layer and final
  (softmax ignores a constant shift, so the shift is removed first);
* ``cos_final`` is the cosine between the lens-transformed state ``lens.transform(resid[l], l)``
  and ``resid[L]`` (both before the final norm); ``agree_top1`` says whether the layer's top-1
  token equals the final top-1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lenslab.errors import LensLabError
from lenslab.extract import Activations
from lenslab.lenses.base import Lens
from lenslab.lenses.logit import LogitLens
from lenslab.prompts import EncodedPrompt
from lenslab.stats.config import LensConfig, parse_lens_config

__all__ = [
    "LensConfig", "PromptStats", "apply_lens", "parse_lens_config", "prompt_stats", "stats_frames",
]  # fmt: skip

# The fused (torch.compile) reduction pays off only for real vocabularies; tiny test vocabularies
# stay eager, so unit tests never wait for a compiler.
COMPILE_MIN_VOCAB = 8192


# -- the reduction over the vocabulary ---------------------------------------------------------
def _lse(x: Tensor) -> Tensor:
    """log-sum-exp over the last axis, keepdim; the same code for references and layers, so a
    layer identical to the final output gives exactly zero divergence."""
    m = x.amax(-1, keepdim=True)
    return m + torch.exp(x - m).sum(-1, keepdim=True).log()


def _reduce(
    x: Tensor, m: Tensor, refs: tuple[Tensor, ...], ids: Tensor, clip: tuple | None
) -> tuple[Tensor, ...]:
    """Every vocabulary reduction of the logits ``x`` ``[T, V]`` of one layer.

    ``m`` ``[T, 1]`` is the row maximum (the top-1 logit, known from top-k: one pass fewer).
    ``refs`` are per-position references: final probabilities
    ``pf`` and log-probabilities ``lpf`` ``[T, V]``, input probabilities ``pin`` ``[T, V]``, the
    final and input entropies ``hf``, ``hin`` ``[T, 1]``. ``ids``
    ``[T, m]`` are the tokens to rank; ``clip`` holds the clipped references when
    ``clip_probs`` is on. Written so that torch.compile fuses it into two passes over ``x``
    (sum of exp; everything else), the second reading three references.
    """
    pf, lpf, pin, hf, hin = refs
    lse = m + torch.exp(x - m).sum(-1, keepdim=True).log()
    lq = x - lse  # log-probabilities of the layer
    p = torch.exp(lq)
    entropy = -(p * lq).sum(-1)
    if clip is None:
        # sum p (log p - log q) = -H(p) - sum p log q: one product per reference, no log.
        kl_final = -(hf[..., 0] + (pf * lq).sum(-1))
        kl_input = -(hin[..., 0] + (pin * lq).sum(-1))
        rev_kl = -(entropy + (p * lpf).sum(-1))
    else:
        log_c, wf, lpf_c, win, lpin_c = clip
        lqc, w = lq.clamp_min(log_c), p.clamp_min(math.exp(log_c))
        kl_final = (wf * (lpf_c - lqc)).sum(-1)
        kl_input = (win * (lpin_c - lqc)).sum(-1)
        rev_kl = (w * (lqc - lpf_c)).sum(-1)
    # JS = H((p+q)/2) - (H(p)+H(q))/2, and H((p+q)/2) = -sum((p+q) log(p+q))/2 + ln 2. The
    # clamp only guards log(0) (where the term is 0 anyway) and keeps the loop vectorised.
    pm = p + pf
    js = -0.5 * (pm * pm.clamp_min(1e-30).log()).sum(-1) + math.log(2.0)
    js = js - 0.5 * (entropy + hf[..., 0])
    # MSE of centred logits = variance over the vocabulary of (x - f), which equals that of
    # lq - lpf (they differ by a constant); log-probabilities keep the mean small, so the
    # one-pass form E[d^2] - E[d]^2 loses no precision worth noting in float32.
    d = lq - lpf
    mse = (d.square().mean(-1) - d.mean(-1).square()).clamp_min(0)
    thr = x.gather(-1, ids)  # [T, m] logits of the ranked tokens
    # One reduction per ranked token (not one [T, m, V] comparison) so they fuse into the
    # same pass over x.
    # Counts summed in float32 (exact below 2**24 tokens) vectorise better than int64.
    ranks = torch.stack(
        [(x > thr[..., j : j + 1]).to(x.dtype).sum(-1) for j in range(ids.shape[-1])], -1
    )
    return lse[..., 0], entropy, kl_final, kl_input, rev_kl, js, mse, ranks + 1, thr


_COMPILED: dict[Callable, Callable] = {}


def _fused(fn: Callable, mode: str, vocab: int, *args) -> Any:
    """Call ``fn`` eagerly, or its torch.compile version (``auto``: large vocabularies only).

    A compiler failure (no C++ compiler, unsupported backend) falls back to eager with a
    warning under ``auto`` and is an error under ``on``.
    """
    if mode == "off" or (mode == "auto" and vocab < COMPILE_MIN_VOCAB):
        return fn(*args)
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)  # compiled once per process, then cached
    compiled = _COMPILED[fn]
    if compiled is fn:  # an earlier compiler failure under `auto`
        return fn(*args)
    try:
        return compiled(*args)
    except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
        if mode == "on":
            raise LensLabError(
                f"torch.compile of the lens statistics failed: {err}",
                fix="set lens.compile=off (eager) or auto",
            ) from err
        warnings.warn(f"lens statistics: torch.compile failed ({err}); using eager", stacklevel=2)
        _COMPILED[fn] = fn
        return fn(*args)


# -- per-prompt streaming ----------------------------------------------------------------------
SCALARS = (
    "lse",
    "entropy",
    "kl_final",
    "kl_input",
    "rev_kl_final",
    "js_final",
    "mse_logits",
)
RANKED = ("final_top1", "next", "input")  # the first ranked ids; tracked targets follow


@dataclass
class PromptStats:
    """Arrays ``[n_layers, T, ...]`` of one prompt under one lens (rows = ``layers``)."""

    layers: list[int]
    arrays: dict[str, np.ndarray]
    final_top1: np.ndarray  # [T]
    track_ids: list[int]
    vocab_size: int


def _decodes_like_model(lens: Lens) -> bool:
    """The lens at layer L is exactly the model's output (identity transform, full norm)."""
    return isinstance(lens, LogitLens) and lens.affine


def _chunk_logits(lens: Lens, h: Tensor, layers: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Logits ``[C, T, V]`` of states ``h`` ``[C, T, D]`` and the transformed states.

    A lens that keeps the base ``logits`` (decode after transform) is decoded in one batched
    matmul over all layers of the chunk; a lens with its own ``logits`` is called per layer.
    """
    states = torch.stack([lens.transform(h[i], layer) for i, layer in enumerate(layers)])
    if type(lens).logits is Lens.logits:
        return lens.adapter.decode(states, affine=lens.affine), states
    return torch.stack([lens.logits(h[i], layer) for i, layer in enumerate(layers)]), states


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine along the last axis, ``b`` broadcast over ``a``'s leading axis (a zero vector
    gives 0)."""
    dots = (a * b).sum(-1)
    return dots / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)


def _references(final: Tensor, x0: Tensor, clip: bool) -> tuple[tuple, tuple | None]:
    """Per-position references of :func:`_reduce`: final and input distributions."""
    lpf = final - _lse(final)
    pf = torch.exp(lpf)
    lpin = x0 - _lse(x0)
    pin = torch.exp(lpin)
    hf = -(pf * lpf).sum(-1, keepdim=True)
    hin = -(pin * lpin).sum(-1, keepdim=True)
    refs = (pf, lpf, pin, hf, hin)
    if not clip:
        return refs, None
    log_c = math.log(1.0 / (10 * final.shape[-1]))
    c = math.exp(log_c)
    return refs, (log_c, pf.clamp_min(c), lpf.clamp_min(log_c), pin.clamp_min(c),
                  lpin.clamp_min(log_c))  # fmt: skip


def _check_inputs(lens: Lens, resid: Tensor, input_ids: Tensor) -> None:
    n = lens.adapter.n_layers + 1
    if resid.ndim != 3 or resid.shape[0] != n:
        raise LensLabError(
            f"residual stream of shape {tuple(resid.shape)} does not fit "
            f"{lens.adapter.name or 'the model'} ({n} states of width {lens.adapter.d_model})",
            fix="re-extract the activations with the same model (delete results/activations/...)",
        )
    if input_ids.shape[0] != resid.shape[1]:
        raise LensLabError(
            f"{input_ids.shape[0]} token ids for {resid.shape[1]} positions",
            fix="pass the input ids that produced the residual stream",
        )


def _layer_list(lens: Lens, layers: Sequence[int] | None) -> list[int]:
    n = lens.adapter.n_layers
    if layers is None:
        return list(range(n + 1))
    return sorted({lens.adapter.check_layer(int(layer)) for layer in layers})


def _check_ids(ids: Sequence[int], vocab: int, what: str) -> None:
    bad = [i for i in ids if not 0 <= int(i) < vocab]
    if bad:
        raise LensLabError(
            f"{what} id(s) {bad} are outside the vocabulary (size {vocab})",
            fix="encode the prompts with this model's tokenizer",
        )


@torch.no_grad()
def prompt_stats(
    lens: Lens,
    resid: Tensor,
    input_ids: Tensor,
    cfg: LensConfig | None = None,
    track_ids: Sequence[int] = (),
    final_logits: Tensor | None = None,
) -> PromptStats:
    """Statistics of one prompt: ``resid`` ``[L+1, T, D]``, ``input_ids`` ``[T]``.

    ``track_ids`` are extra tokens whose logit and rank are kept at every (layer, position);
    ``final_logits`` ``[T, V]`` (the model's own, e.g. from the forward pass) saves one matmul.
    """
    cfg = cfg or LensConfig()
    adapter = lens.adapter
    _check_inputs(lens, resid, input_ids)
    layers = _layer_list(lens, cfg.layers)
    n_pos = resid.shape[1]
    vocab = adapter.vocab_size
    input_ids = input_ids.long().cpu()
    _check_ids(input_ids.tolist(), vocab, "input token")
    _check_ids(list(track_ids), vocab, "tracked token")
    if cfg.topk > vocab:
        raise LensLabError(f"lens.topk={cfg.topk} exceeds the vocabulary ({vocab})", fix="lower it")
    row = {layer: i for i, layer in enumerate(layers)}
    out = _allocate(len(layers), n_pos, cfg.topk, len(RANKED) + len(track_ids))
    final_top1 = np.zeros(n_pos, dtype=np.int64)
    nxt = torch.cat([input_ids[1:], input_ids[-1:]])  # last position has no next token
    extra = torch.tensor(list(track_ids), dtype=torch.long)
    for p0 in range(0, n_pos, cfg.chunk_positions):
        pos = slice(p0, min(n_pos, p0 + cfg.chunk_positions))
        final = final_logits[pos] if final_logits is not None else None
        ranked = torch.cat(
            [nxt[pos, None], input_ids[pos, None], extra.expand(pos.stop - pos.start, -1)], -1
        )
        ctx = _position_chunk(lens, cfg, resid[:, pos], final, ranked, out, row, pos)
        final_top1[pos] = ctx.ids[:, 0].cpu().numpy()
        todo = [layer for layer in layers if layer not in (0, ctx.reused_last)]
        for c0 in range(0, len(todo), cfg.chunk_layers):
            chunk = todo[c0 : c0 + cfg.chunk_layers]
            x, states = _chunk_logits(lens, ctx.h[chunk], chunk)
            ctx.fill(chunk, x, states)
            del x, states  # free the chunk before the next one is decoded
        del ctx
    last = n_pos - 1  # no true next token after the last position
    for key in ("rank_next", "logit_next"):
        out[key][:, last] = np.nan
    return PromptStats(layers, out, final_top1, [int(i) for i in track_ids], vocab)


def _position_chunk(
    lens: Lens,
    cfg: LensConfig,
    h: Tensor,
    final: Tensor | None,
    ranked: Tensor,
    out: dict[str, np.ndarray],
    row: dict[int, int],
    pos: slice,
) -> _Chunk:
    """References of one position chunk (final and input distributions); fills layer 0, and
    layer L when the lens at L is the model's output (one matmul fewer)."""
    adapter = lens.adapter
    n_layers = adapter.n_layers
    # Activations are stored in float32; the lens runs in the model's dtype (its norm and
    # unembedding refuse mixed dtypes), the statistics below in float32 or better.
    h = h.to(adapter.device, adapter.unembed.weight.dtype)
    final = (final if final is not None else adapter.decode(h[n_layers])).to(adapter.device)
    final = final.float()
    x0, s0 = _chunk_logits(lens, h[:1], [0])
    vocab = adapter.vocab_size
    refs = _fused(_references, cfg.compile, vocab, final, x0[0].float(), cfg.clip_probs)
    top1 = final.argmax(-1)
    ids = torch.cat([top1[:, None], ranked.to(top1.device)], -1)  # final top-1, next, input, ...
    reused = n_layers if _decodes_like_model(lens) else None
    ctx = _Chunk(cfg, out, row, pos, refs, ids, h, vocab, reused)
    if 0 in row:
        ctx.fill([0], x0, s0)
    if reused is not None and reused in row:
        ctx.fill([n_layers], final[None], h[n_layers][None])
    return ctx


def _allocate(n_rows: int, n_pos: int, k: int, m: int) -> dict[str, np.ndarray]:
    out = {key: np.zeros((n_rows, n_pos), dtype=np.float64) for key in SCALARS}
    for key in ("cos_final", "rank_final_top1", "rank_next", "rank_input", "logit_next"):
        out[key] = np.zeros((n_rows, n_pos), dtype=np.float64)
    out["top_ids"] = np.zeros((n_rows, n_pos, k), dtype=np.int64)
    out["top_logits"] = np.zeros((n_rows, n_pos, k), dtype=np.float64)
    out["track_rank"] = np.zeros((n_rows, n_pos, m - len(RANKED)), dtype=np.float64)
    out["track_logit"] = np.zeros((n_rows, n_pos, m - len(RANKED)), dtype=np.float64)
    return out


@dataclass
class _Chunk:
    """Everything one position chunk shares while its layer chunks are reduced."""

    cfg: LensConfig
    out: dict[str, np.ndarray]
    row: dict[int, int]
    pos: slice
    refs: tuple
    ids: Tensor  # [T, m] ranked tokens: final top-1, next, input, tracked
    h: Tensor  # [L+1, T, D] residual states of the chunk
    vocab: int
    reused_last: int | None  # L when layer L was filled from the model's own logits

    def fill(self, layers: Sequence[int], x: Tensor, states: Tensor) -> None:
        x = x.float()
        vals, top_ids = x.topk(self.cfg.topk, dim=-1)
        refs, clip = self.refs
        # One layer per call: x and the references then share one [T, V] iteration space, which
        # lets the compiled reduction run as a single fused pass after max and sum-exp.
        per_layer = [
            _fused(_reduce, self.cfg.compile, self.vocab, xi, mi, refs, self.ids, clip)
            for xi, mi in zip(x, vals[..., :1], strict=True)
        ]
        lse, entropy, kl_f, kl_in, rev, js, mse, ranks, thr = (
            torch.stack(r).double().cpu() for r in zip(*per_layer, strict=True)
        )
        cos = _cosine(states.float(), self.h[-1].float())
        rows = [self.row[layer] for layer in layers]
        o, p = self.out, self.pos
        o["lse"][rows, p] = lse.numpy()
        o["entropy"][rows, p] = entropy.clamp_min(0).numpy()
        o["kl_final"][rows, p] = kl_f.clamp_min(0).numpy()
        o["kl_input"][rows, p] = kl_in.clamp_min(0).numpy()
        o["rev_kl_final"][rows, p] = rev.clamp_min(0).numpy()
        o["js_final"][rows, p] = js.clamp_min(0).numpy()
        o["mse_logits"][rows, p] = mse.numpy()
        o["cos_final"][rows, p] = cos.double().cpu().numpy()
        o["rank_final_top1"][rows, p] = ranks[..., 0].numpy()
        o["rank_next"][rows, p] = ranks[..., 1].numpy()
        o["rank_input"][rows, p] = ranks[..., 2].numpy()
        o["logit_next"][rows, p] = thr[..., 1].numpy()
        o["track_rank"][rows, p] = ranks[..., len(RANKED) :].numpy()
        o["track_logit"][rows, p] = thr[..., len(RANKED) :].numpy()
        o["top_ids"][rows, p] = top_ids.cpu().numpy()
        o["top_logits"][rows, p] = vals.double().cpu().numpy()


# -- tables -----------------------------------------------------------------------------------
def _tracked(prompt: EncodedPrompt | None, tokenizer) -> list[tuple[str, str, int]]:
    """(word, role, id) of the tokens tracked for a prompt: its answer, then its targets."""
    if prompt is None:
        return []
    out: list[tuple[str, str, int]] = []
    if prompt.answer_id is not None:
        word = tokenizer.decode([prompt.answer_id]).strip() if tokenizer else str(prompt.answer_id)
        out.append((word, "answer", int(prompt.answer_id)))
    out += [(w, "target", int(i)) for w, i in prompt.target_ids.items()]
    return out


class _Decoder:
    """Token text with a cache (top-k tables decode the same ids many times)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, tid: int) -> str:
        if tid not in self.cache:
            self.cache[tid] = self.tokenizer.decode([tid]) if self.tokenizer else str(tid)
        return self.cache[tid]


def stats_frames(
    stats: PromptStats,
    input_ids: Tensor,
    prompt_id: str,
    prompt_index: int,
    lens_name: str,
    tokenizer=None,
    tracked: Sequence[tuple[str, str, int]] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy per-(layer, position) table and the tracked-token table of one prompt."""
    a = stats.arrays
    n_rows, n_pos = a["lse"].shape
    decode = _Decoder(tokenizer)
    ids = input_ids.long().tolist()
    layer = np.repeat(np.asarray(stats.layers), n_pos)
    position = np.tile(np.arange(n_pos), n_rows)
    lse = a["lse"].reshape(-1)
    nxt = np.asarray(ids[1:] + [-1])
    df = pd.DataFrame(
        {
            "prompt_id": prompt_id,
            "prompt_index": prompt_index,
            "lens": lens_name,
            "layer": layer,
            "position": position,
            "token_id": np.tile(ids, n_rows),
            "token": np.tile([decode(i) for i in ids], n_rows),
            "next_token_id": np.tile(nxt, n_rows),
            "next_token": np.tile([decode(i) if i >= 0 else "" for i in nxt], n_rows),
            "final_top1_id": np.tile(stats.final_top1, n_rows),
            "vocab_size": stats.vocab_size,
        }
    )
    for j in range(a["top_ids"].shape[-1]):
        tid = a["top_ids"][..., j].reshape(-1)
        logit = a["top_logits"][..., j].reshape(-1)
        df[f"top{j + 1}_id"] = tid
        df[f"top{j + 1}_token"] = [decode(int(i)) for i in tid]
        df[f"top{j + 1}_logit"] = logit
        df[f"top{j + 1}_prob"] = np.exp(logit - lse)
    df["agree_top1"] = df["top1_id"] == df["final_top1_id"]
    for key in ("rank_final_top1", "rank_next", "rank_input"):
        df[key] = a[key].reshape(-1)
    logprob_next = a["logit_next"].reshape(-1) - lse
    df["prob_next"] = np.exp(logprob_next)
    df["xent_next"] = -logprob_next
    for key in SCALARS[1:]:
        df[key] = a[key].reshape(-1)
    df["cos_final"] = a["cos_final"].reshape(-1)
    return df, _track_frame(stats, tracked, prompt_id, prompt_index, lens_name, layer, position)


def _track_frame(stats, tracked, prompt_id, prompt_index, lens_name, layer, position):
    a = stats.arrays
    lse = a["lse"].reshape(-1)
    parts = []
    for j, (word, role, tid) in enumerate(tracked):
        logit = a["track_logit"][..., j].reshape(-1)
        parts.append(
            pd.DataFrame(
                {
                    "prompt_id": prompt_id,
                    "prompt_index": prompt_index,
                    "lens": lens_name,
                    "layer": layer,
                    "position": position,
                    "target": word,
                    "role": role,
                    "token_id": tid,
                    "logit": logit,
                    "logprob": logit - lse,
                    "prob": np.exp(logit - lse),
                    "rank": a["track_rank"][..., j].reshape(-1),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=TRACK_COLUMNS)
    return pd.concat(parts, ignore_index=True)


TRACK_COLUMNS = [
    "prompt_id", "prompt_index", "lens", "layer", "position", "target", "role", "token_id",
    "logit", "logprob", "prob", "rank",
]  # fmt: skip


def apply_lens(
    lens: Lens,
    acts: Activations,
    prompts: Sequence[EncodedPrompt] | None = None,
    cfg: LensConfig | None = None,
    tokenizer=None,
    lens_name: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply ``lens`` to every prompt of ``acts``: (per-(layer, position) table, tracked table).

    ``prompts`` (the encoded prompt set the activations came from) supply the tracked answer
    and target tokens; they must match the activations prompt by prompt.
    """
    cfg = cfg or LensConfig()
    tokenizer = tokenizer if tokenizer is not None else lens.adapter.tokenizer
    name = lens_name or lens.name
    if prompts is not None:
        _check_prompts(acts, prompts)
    tables, tracks = [], []
    for k, (pid, ids, resid) in enumerate(
        zip(acts.prompt_ids, acts.input_ids, acts.resid, strict=True)
    ):
        tracked = _tracked(prompts[k] if prompts is not None else None, tokenizer)
        stats = prompt_stats(lens, resid, ids, cfg, [t[2] for t in tracked])
        df, tr = stats_frames(stats, ids, pid, k, name, tokenizer, tracked)
        tables.append(df)
        tracks.append(tr)
    return pd.concat(tables, ignore_index=True), pd.concat(tracks, ignore_index=True)


def _check_prompts(acts: Activations, prompts: Sequence[EncodedPrompt]) -> None:
    ids = [p.id for p in prompts]
    if ids != list(acts.prompt_ids):
        raise LensLabError(
            f"activations hold prompts {list(acts.prompt_ids)} but the prompt set has {ids}",
            fix="re-extract the activations for this prompt set",
        )
    for p, tok in zip(prompts, acts.input_ids, strict=True):
        if list(p.input_ids) != tok.tolist():
            raise LensLabError(
                f"prompt {p.id!r} tokenises differently from its activations",
                fix="re-extract the activations (the prompt text or tokenizer changed)",
            )
