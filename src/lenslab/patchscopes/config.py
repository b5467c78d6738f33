"""Figure options of the patchscope views (``study.figures.F11/F12.options``), validated, and
the glue from prompt-set configs to the experiments."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import pandas as pd

from lenslab.errors import LensLabError
from lenslab.lenses.base import Lens
from lenslab.models.adapter import ModelAdapter
from lenslab.patchscopes.experiments import (
    SourcePrompt,
    entity_resolution,
    layer_pairs,
    token_identity,
)
from lenslab.prompts import encode, encode_set

# The paper's token-identity target; the embedded world's studies set their own in its words.
PAPER_IDENTITY_TARGET = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
PAPER_ENTITY_TARGET = (
    "Syria: Country in the Middle East, Leonardo DiCaprio: American actor, Samsung: South Korean "
    "multinational major appliance and consumer electronics corporation, x"
)


@dataclass(frozen=True)
class IdentityOptions:
    """F11: token identity. ``lenses`` None: the study's lenses (``lens.lenses``)."""

    target: str = PAPER_IDENTITY_TARGET
    target_position: int = -1
    cross_layer: bool = True  # also every l != l* pair (the cross-layer panel)
    lenses: list[str] | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class EntityOptions:
    """F12: entity resolution by greedy generation."""

    target: str = PAPER_ENTITY_TARGET
    target_position: int = -1
    max_new_tokens: int = 8
    batch_size: int = 64


def parse_options(cls: type, options: Any) -> Any:
    """``cls(**options)``; an unknown key is an error naming the valid ones."""
    options = dict(options or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise LensLabError(
            f"unknown figure option(s) {unknown} for {cls.__name__}",
            fix=f"use only {sorted(known)}",
        )
    return cls(**options)


def run_identity(
    adapter: ModelAdapter,
    prompt_set: Any,
    opts: IdentityOptions,
    lenses: dict[str, Lens],
    prepend_bos: bool | None = None,
) -> pd.DataFrame:
    """F11 table: every prompt of the set, every position, l* = l (and every l* if cross)."""
    prompts = [
        SourcePrompt(p.id, p.input_ids, text=p.text)
        for p in encode_set(adapter.tokenizer, prompt_set, prepend_bos)
    ]
    target_ids = encode(adapter.tokenizer, opts.target, prepend_bos)
    pairs = layer_pairs(adapter.n_layers, cross=opts.cross_layer)
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
