"""Reading continuations from one layer (F16) and word probabilities over several tokens (F16b).

``lens_beam``: from layer ``l`` at position ``t``, a beam search whose scores are the *lens's*
distributions at layer ``l``: the first token comes from the lens at (l, t); each further token
from the lens at layer ``l`` of the last position once the beam's tokens are appended to the
prompt (the model runs on them, the reading stays at layer ``l``). The score of a continuation is
its summed lens log-probability, so at ``l = L`` this is ordinary beam search on the model.

``prefix_token_ids`` / ``prefix_prob``: Wendler et al. (2024) count a word of several tokens by
summing the probabilities of every token that is a prefix of the word.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lenslab.errors import LensLabError
from lenslab.lenses.base import Lens
from lenslab.models.adapter import ModelAdapter, output_cache
from lenslab.options import BeamOptions
from lenslab.prompts import encode, encode_set

BEAM_COLUMNS = ["prompt_id", "position", "layer", "rank", "tokens", "text", "logprob"]


@dataclass
class _Prompt:
    """One forward of the prompt up to the beam's position: its residual stream
    ``[L+1, 1, n, d]`` and its key/value cache (None: the model gives none to reuse)."""

    ids: Tensor
    resid: Tensor
    cache: Any | None


@torch.no_grad()
def _run_prompt(adapter: ModelAdapter, ids: Sequence[int], position: int, use_cache: bool):
    prefix = _prefix(ids, position, adapter.device)
    states: list[Tensor] = []
    with adapter.record_resid(states):
        out = adapter.model(input_ids=prefix, use_cache=use_cache)
    cache = output_cache(out) if use_cache else None
    return _Prompt(prefix, torch.stack(states), cache if hasattr(cache, "reorder_cache") else None)


def _lens_logprobs(lens: Lens, resid: Tensor, layer: int) -> Tensor:
    """Lens log-probabilities ``[B, V]`` at layer ``layer`` of the last position of ``resid``."""
    return torch.log_softmax(lens.logits(resid[layer, :, -1], layer).float(), -1)


@torch.no_grad()
def _next_logprobs(lens: Lens, seqs: Tensor, cache: Any | None, layer: int):
    """The lens at ``layer`` after each beam's last token: from the cache when there is one
    (only the new tokens run), else by rerunning the whole sequences. Returns (logp, cache)."""
    adapter = lens.adapter
    if cache is None:
        _, resid = adapter.run_with_resid(seqs)
        return _lens_logprobs(lens, resid, layer), None
    states: list[Tensor] = []
    with adapter.record_resid(states):
        out = adapter.model(input_ids=seqs[:, -1:], cache=cache, use_cache=True)
    return _lens_logprobs(lens, torch.stack(states), layer), output_cache(out)


@torch.no_grad()
def lens_beam(
    lens: Lens,
    ids: Sequence[int],
    layer: int,
    position: int = -1,
    width: int = 5,
    depth: int = 3,
    use_cache: bool = True,
    prompt: _Prompt | None = None,
) -> list[tuple[list[int], float]]:
    """The ``width`` best continuations of ``depth`` tokens read from ``layer`` at ``position``,
    best first, as (token ids, summed lens log-probability). Ties go to the lower token id.

    ``use_cache``: the prompt runs once and each further token reuses its keys and values (a
    long prompt then costs one forward, not one per beam step); ``False`` reruns the whole
    sequences at every step (the reference). ``prompt``: that first forward, shared by a caller
    that reads many layers (:func:`beam_table`)."""
    adapter = lens.adapter
    layer = adapter.check_layer(layer)
    if width < 1 or depth < 1:
        raise LensLabError(f"beam width={width}, depth={depth}", fix="use width, depth >= 1")
    prompt = prompt or _run_prompt(adapter, ids, position, use_cache)
    cache = copy.deepcopy(prompt.cache)  # the beams extend it; the prompt's stays as it was
    seqs, scores = prompt.ids, torch.zeros(1, device=adapter.device)
    logp = _lens_logprobs(lens, prompt.resid, layer)
    for step in range(depth):
        if step > 0:
            logp, cache = _next_logprobs(lens, seqs, cache, layer)  # [B, V]
        total = (scores[:, None] + logp).flatten()
        # A stable sort makes ties deterministic (lower beam, then lower token id, first).
        best = torch.sort(total, descending=True, stable=True).indices[:width]
        beam, tok = best // logp.shape[1], best % logp.shape[1]
        seqs = torch.cat([seqs[beam], tok[:, None]], dim=1)
        scores = total[best]
        if cache is not None:
            cache.reorder_cache(beam)  # row i of the cache now belongs to beam i
    n = prompt.ids.shape[1]
    return [(s[n:].tolist(), float(v)) for s, v in zip(seqs, scores, strict=True)]


def _prefix(ids: Sequence[int], position: int, device: torch.device) -> Tensor:
    """The prompt up to and including ``position``, ``[1, n]``."""
    if not -len(ids) <= position < len(ids):
        raise LensLabError(
            f"position {position} is outside the prompt ({len(ids)} tokens)",
            fix="choose a position inside the prompt (-1: the last token)",
        )
    return torch.tensor([list(ids)[: position % len(ids) + 1]], device=device)


def beam_table(
    lens: Lens,
    prompt_id: str,
    ids: Sequence[int],
    positions: Sequence[int],
    layers: Sequence[int] | None = None,
    width: int = 5,
    depth: int = 3,
) -> pd.DataFrame:
    """``lens_beam`` at every requested (layer, position), one row per beam."""
    adapter, tok = lens.adapter, lens.adapter.tokenizer
    layers = range(adapter.n_layers + 1) if layers is None else layers
    rows = []
    bar = tqdm(total=len(positions) * len(layers), desc="lens beams", mininterval=5.0)
    for t in positions:
        # The prompt's forward is the same for every layer: one per position.
        prompt = _run_prompt(adapter, ids, t, use_cache=True)
        for layer in layers:
            beams = lens_beam(lens, ids, layer, t, width, depth, prompt=prompt)
            for rank, (cont, lp) in enumerate(beams):
                text = " ".join(tok.decode([i]).strip() for i in cont) if tok else str(cont)
                rows.append((prompt_id, t % len(ids), layer, rank, cont, text, lp))
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows, columns=BEAM_COLUMNS)


def prefix_token_ids(tokenizer, word: str, vocab_size: int | None = None) -> list[int]:
    """Ids of every token whose text (leading spaces dropped) is a non-empty prefix of
    ``word``: the word's own first token, shorter pieces, and whole-word tokens."""
    word = word.strip()
    if not word:
        raise LensLabError("empty word", fix="name a word to track")
    n = vocab_size or len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    ids = [i for i, t in enumerate(texts) if t.strip() and word.startswith(t.lstrip())]
    if not ids:
        raise LensLabError(
            f"no token of the vocabulary is a prefix of {word!r}",
            fix="check the word's spelling for this tokenizer",
        )
    return ids


def prefix_prob(probs: Tensor, ids: Sequence[int]) -> Tensor:
    """Summed probability ``[...]`` of the tokens ``ids`` (Wendler et al.'s word probability)."""
    return probs[..., list(ids)].sum(-1)


def run_beam(lens: Lens, prompt_set: Any, opts: BeamOptions, prepend_bos: bool | None = None):
    """F16c table: the beams of one prompt at every layer and the chosen positions."""
    prompts = encode_set(lens.adapter.tokenizer, prompt_set, prepend_bos)
    chosen = [p for p in prompts if opts.prompt in (None, p.id)][:1]
    if not chosen:
        raise LensLabError(
            f"prompt {opts.prompt!r} is not in the prompt set",
            fix=f"use one of {[p.id for p in prompts]}",
        )
    p = chosen[0]
    return beam_table(lens, p.id, p.input_ids, opts.positions, width=opts.width, depth=opts.depth)


@torch.no_grad()
def detour_table(lens: Lens, prompt_set: Any, prepend_bos: bool | None = None) -> pd.DataFrame:
    """F16b with words of several tokens: per prompt and layer, the lens probability at the last
    position of its answer and of each tracked word, each summed over every token that is a
    prefix of the word (Wendler et al. 2024). Columns as the lens targets table's."""
    adapter = lens.adapter
    tok = adapter.tokenizer
    rows = []
    for p in _prompt_dicts(prompt_set):
        ids = encode(tok, p["text"], prepend_bos)
        _, resid = adapter.run_with_resid(torch.tensor([ids], device=adapter.device))
        words = [(p["answer"], "answer")] if p.get("answer") else []
        words += [(w, "target") for w in p.get("targets") or []]
        prefixes = {w: prefix_token_ids(tok, w, adapter.vocab_size) for w, _ in words}
        for layer in range(resid.shape[0]):
            probs = torch.softmax(lens.logits(resid[layer, 0, -1], layer).float(), -1)
            for word, role in words:
                prob = float(prefix_prob(probs, prefixes[word]))
                rows.append((p["id"], layer, len(ids) - 1, word, role, len(prefixes[word]), prob))
    columns = ["prompt_id", "layer", "position", "target", "role", "n_prefix_tokens", "prob"]
    return pd.DataFrame(rows, columns=columns)


def _prompt_dicts(prompt_set: Any) -> list[dict]:
    items = prompt_set.get("prompts") if hasattr(prompt_set, "get") else prompt_set.prompts
    return [dict(q) for q in items]
