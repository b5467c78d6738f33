"""The glue from prompt-set configs and the patchscope views' options (F11, F12; defined in
:mod:`lenslab.options`) to the experiments."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lenslab.lenses.base import Lens
from lenslab.models.adapter import ModelAdapter
from lenslab.options import EntityOptions, IdentityOptions, parse_options
from lenslab.patchscopes.experiments import (
    SourcePrompt,
    entity_resolution,
    layer_pairs,
    token_identity,
)
from lenslab.prompts import encode, encode_set


def run_identity(
    adapter: ModelAdapter,
    prompt_set: Any,
    opts: IdentityOptions,
    lenses: dict[str, Lens],
    prepend_bos: bool | None = None,
) -> pd.DataFrame:
    """F11 table: every prompt of the set, every position, l* = l (and the cross-layer grid)."""
    prompts = [
        SourcePrompt(p.id, p.input_ids, text=p.text)
        for p in encode_set(adapter.tokenizer, prompt_set, prepend_bos)
    ]
    target_ids = encode(adapter.tokenizer, opts.target, prepend_bos)
    pairs = layer_pairs(adapter.n_layers, opts.cross_layer, opts.cross_layer_step)
    return token_identity(
        adapter, prompts, target_ids, pairs=pairs, lenses=lenses,
        target_position=opts.target_position, batch_size=opts.batch_size,
    )  # fmt: skip


def run_entities(
    adapter: ModelAdapter, prompt_set: Any, opts: EntityOptions, prepend_bos: bool | None = None
) -> pd.DataFrame:
    """F12 table: each prompt's last subject token (its last token without a subject) read at
    every layer through the entity target; ``answer`` is the entity its description names."""
    sources = []
    for p in encode_set(adapter.tokenizer, prompt_set, prepend_bos):
        pos = p.subject_positions[-1] if p.subject_positions else len(p.input_ids) - 1
        answer = next((q.get("answer") for q in _prompts(prompt_set) if q.get("id") == p.id), None)
        sources.append(SourcePrompt(p.id, p.input_ids, [pos], answer, p.text))
    target_ids = encode(adapter.tokenizer, opts.target, prepend_bos)
    return entity_resolution(
        adapter, sources, target_ids, max_new_tokens=opts.max_new_tokens,
        target_position=opts.target_position, batch_size=opts.batch_size,
    )  # fmt: skip


def _prompts(prompt_set: Any) -> list[dict]:
    items = prompt_set.get("prompts") if hasattr(prompt_set, "get") else prompt_set.prompts
    return [dict(q) for q in items]


__all__ = ["EntityOptions", "IdentityOptions", "parse_options", "run_entities", "run_identity"]
