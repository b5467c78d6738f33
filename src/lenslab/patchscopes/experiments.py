"""Patchscope experiments as tidy tables: token identity (vs lenses, across layers and
models) and entity resolution by greedy generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from lenslab.errors import LensLabError
from lenslab.lenses.base import Lens
from lenslab.models.adapter import ModelAdapter
from lenslab.patchscopes.core import check_position, patched_generate, patched_logits, source_run

TOKEN_COLUMNS = [
    "prompt_id", "position", "token", "layer", "target_layer", "method", "source_pred_id",
    "source_pred", "pred_id", "pred", "correct", "surprisal",
]  # fmt: skip
ENTITY_COLUMNS = [
    "source_id", "source", "layer", "target_layer", "answer", "generation", "resolved",
]  # fmt: skip
STOP_TOKENS = (",", ".", "\n")


@dataclass
class SourcePrompt:
    """A source prompt: ``positions`` to read (None: every position)."""

    id: str
    ids: list[int]
    positions: list[int] | None = None
    answer: str | None = None
    text: str = ""
    meta: dict = field(default_factory=dict)


def layer_pairs(n_layers: int, cross: bool = False, cross_step: int = 1) -> list[tuple[int, int]]:
    """(source layer l, target layer l*) pairs over residual states 0..L: ``l* = l`` at every
    layer and, when ``cross``, every pair of the states ``0, step, 2 step, ..., L`` (the
    cross-layer grid costs its size squared: every 3rd of SmolLM2's 31 states is 121 pairs, not
    961)."""
    states = range(n_layers + 1)
    pairs = [(a, a) for a in states]
    if cross:
        grid = sorted({*range(0, n_layers + 1, max(1, cross_step)), n_layers})
        pairs += [(a, b) for a in grid for b in grid if a != b]
    return sorted(pairs)


def _decode(tokenizer, ids: Sequence[int]) -> list[str]:
    return (
        [tokenizer.decode([int(i)]) for i in ids] if tokenizer is not None else list(map(str, ids))
    )


def _scores(logits: Tensor, want: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """argmax, whether it equals ``want``, and the surprisal -ln p(want) in nats."""
    logp = torch.log_softmax(logits.float(), -1)
    pred = logits.argmax(-1)
    return pred, pred == want, -logp.gather(-1, want[:, None])[:, 0]


def token_identity(
    source: ModelAdapter,
    prompts: Sequence[SourcePrompt],
    target_ids: Sequence[int],
    target: ModelAdapter | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    mapping: Callable[[Tensor], Tensor] | None = None,
    lenses: dict[str, Lens] | None = None,
    target_position: int = -1,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Token-identity patchscope: for every source cell ``(prompt, position i, layer l)`` and
    target layer ``l*``, patch ``f(resid[l][i])`` into the last position of ``target_ids`` and
    compare the patched top-1 with the source model's own next-token top-1 at ``i``
    (precision@1) and its surprisal. ``lenses`` (on the source model) are read at the same
    cells as baselines (``target_layer`` = ``layer``)."""
    target = target or source
    mapping = mapping or (lambda h: h)
    pairs = list(pairs or layer_pairs(source.n_layers))
    if target is not source and source.tokenizer is not None and target.tokenizer is not None:
        _check_same_vocab(source, target)
    tok = target.tokenizer
    frames = []
    for prompt in prompts:
        logits, resid = source_run(source, prompt.ids)
        n_tok = len(prompt.ids)
        positions = [check_position(p, n_tok, "source") for p in (prompt.positions or range(n_tok))]
        cells = [(p, a, b) for p in positions for (a, b) in pairs]
        pos_t = torch.tensor([c[0] for c in cells])
        src_l = torch.tensor([source.check_layer(c[1]) for c in cells])
        vectors = mapping(resid[src_l, pos_t])
        want = logits[pos_t].argmax(-1)
        patched = patched_logits(
            target, target_ids, target_position, [c[2] for c in cells], vectors,
            batch_size=batch_size,
        )  # fmt: skip
        frames.append(_rows(prompt, cells, "patchscope", want, patched, tok))
        src_layers = sorted({a for a, _ in pairs})
        diag = [(p, a, a) for a in src_layers for p in positions]
        dp = torch.tensor([c[0] for c in diag])
        for name, lens in (lenses or {}).items():
            with torch.no_grad():
                lens_logits = torch.cat([lens.logits(resid[a, positions], a) for a in src_layers])
            frames.append(_rows(prompt, diag, name, logits[dp].argmax(-1), lens_logits, tok))
    return pd.concat(frames, ignore_index=True)[TOKEN_COLUMNS]


def _rows(prompt, cells, method, want, logits, tokenizer) -> pd.DataFrame:
    pred, correct, surprisal = _scores(logits, want)
    token_names = _decode(tokenizer, prompt.ids)
    return pd.DataFrame(
        {
            "prompt_id": prompt.id,
            "position": [c[0] for c in cells],
            "token": [token_names[c[0]] for c in cells],
            "layer": [c[1] for c in cells],
            "target_layer": [c[2] for c in cells],
            "method": method,
            "source_pred_id": want.tolist(),
            "source_pred": _decode(tokenizer, want.tolist()),
            "pred_id": pred.tolist(),
            "pred": _decode(tokenizer, pred.tolist()),
            "correct": correct.tolist(),
            "surprisal": surprisal.double().tolist(),
        }
    )


def _check_same_vocab(source: ModelAdapter, target: ModelAdapter) -> None:
    if source.tokenizer.get_vocab() != target.tokenizer.get_vocab():
        raise LensLabError(
            f"models {source.name!r} and {target.name!r} have different vocabularies, so the "
            "source's next token cannot be compared with the target's output",
            fix="use a target model with the same tokenizer",
        )


def entity_resolution(
    adapter: ModelAdapter,
    sources: Sequence[SourcePrompt],
    target_ids: Sequence[int],
    layers: Sequence[int] | None = None,
    max_new_tokens: int = 8,
    target_position: int = -1,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Entity resolution: the state at each source's last requested position, layer ``l``,
    patched into the target's ``target_position`` at ``l* = l``; greedy generation read up to
    the first stop token (",", "."). ``resolved``: the source's ``answer`` word is generated."""
    layers = list(range(adapter.n_layers + 1)) if layers is None else list(layers)
    tok = adapter.tokenizer
    rows = []
    for src in sources:
        _, resid = source_run(adapter, src.ids)
        pos = check_position((src.positions or [-1])[-1], len(src.ids), "source")
        vectors = resid[[adapter.check_layer(x) for x in layers], pos]
        gens = patched_generate(
            adapter, target_ids, target_position, layers, vectors, max_new_tokens, batch_size
        )
        for layer, gen in zip(layers, gens, strict=True):
            words = _until_stop(_decode(tok, gen))
            text = " ".join(w.strip() for w in words)
            resolved = bool(src.answer) and src.answer.strip() in {w.strip() for w in words}
            rows.append((src.id, src.text, layer, layer, src.answer or "", text, resolved))
    return pd.DataFrame(rows, columns=ENTITY_COLUMNS)


def _until_stop(words: list[str]) -> list[str]:
    out = []
    for w in words:
        if w.strip() in STOP_TOKENS or w in ("<|endoftext|>", "</s>"):
            break
        out.append(w)
    return out


def precision_by_layer(table: pd.DataFrame) -> pd.DataFrame:
    """Per (method, layer, target_layer): precision@1, mean surprisal and counts."""
    g = table.groupby(["method", "layer", "target_layer"], sort=True)
    return g.agg(
        precision=("correct", "mean"), surprisal=("surprisal", "mean"), n=("correct", "size")
    ).reset_index()
