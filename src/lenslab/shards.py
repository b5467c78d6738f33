"""Prompt sets split into shards that run as separate jobs, and their results gathered.

A prompt set with ``shards: n`` is cut into at most ``n`` contiguous slices. Extraction and lens
statistics run per slice of prompts, patching per slice of cases (pairs, or prompts in noise
mode); the gather step concatenates the per-shard tables in order, so the gathered table is
the one-job table row for row and every aggregate computed from it is unchanged. No job holds
the activations of more than one shard.

Extraction runs prompts in batches, and a batch's padding and matmul shapes depend on which
prompts share it; shard sizes are therefore rounded up to a multiple of the batch size, so a
shard's batches are exactly the one-job run's batches and the states are bit-identical.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from lenslab.config import cfg_get as _get
from lenslab.errors import LensLabError


def shard_bounds(n_items: int, shards: int, align: int = 1) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` slices covering ``range(n_items)`` in order.

    At most ``shards`` slices, each a multiple of ``align`` long (except the last); fewer when
    rounding up to ``align`` leaves nothing for the last ones. Never an empty slice.
    """
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise LensLabError(f"shards={shards!r}", fix="set `shards` to a positive integer")
    if align < 1:
        raise LensLabError(f"shard alignment {align!r}", fix="use a positive batch size")
    if n_items <= 0:
        return [(0, 0)]
    size = math.ceil(math.ceil(n_items / shards) / align) * align
    return [(lo, min(n_items, lo + size)) for lo in range(0, n_items, size)]


def n_shards(prompt_set: Any) -> int:
    """The ``shards`` value of a prompt set config (1 when absent)."""
    value = _get(prompt_set, "shards", 1)
    return 1 if value is None else value


def case_count(prompt_set: Any, mode: str) -> int:
    """How many patching cases a prompt set gives without tokenising it: its pairs in pairs
    mode, its prompts with a subject in noise mode (``mode`` already resolved)."""
    if mode == "pairs":
        return len(_get(prompt_set, "pairs", []) or [])
    return sum(1 for p in _get(prompt_set, "prompts", []) or [] if _get(p, "subject"))


def prompt_slice(prompt_set: Any, start: int, stop: int) -> dict[str, Any]:
    """A copy of a prompt-set config holding prompts ``[start, stop)`` and the pairs among
    them; its name is the set's own (results stay labelled by the whole set)."""
    plain = copy.deepcopy(dict(prompt_set))
    prompts = list(plain.get("prompts") or [])[start:stop]
    kept = {_get(p, "id") for p in prompts}
    plain["prompts"] = prompts
    plain["pairs"] = [
        p
        for p in plain.get("pairs") or []
        if _get(p, "clean") in kept and _get(p, "corrupt") in kept
    ]
    plain["shards"] = 1
    return plain


def shard_of(bounds: Sequence[tuple[int, int]], shard: int | str) -> tuple[int, int]:
    index = int(shard)
    if not 0 <= index < len(bounds):
        raise LensLabError(
            f"shard {shard} does not exist (the set has {len(bounds)} shards)",
            fix="ask for a shard index below the shard count",
        )
    return bounds[index]


def gather(tables: Sequence[pd.DataFrame], offsets: Sequence[int] | None = None) -> pd.DataFrame:
    """Concatenate per-shard tables in shard order; ``offsets`` (each shard's first prompt)
    turn shard-local ``prompt_index`` values back into the set's indices."""
    if not tables:
        raise LensLabError("no shard tables to gather", fix="check the shard count of the set")
    parts = []
    for k, table in enumerate(tables):
        if offsets is not None and "prompt_index" in table.columns:
            table = table.assign(prompt_index=table["prompt_index"] + int(offsets[k]))
        parts.append(table)
    columns = list(tables[0].columns)
    for k, table in enumerate(parts):
        if list(table.columns) != columns:
            raise LensLabError(
                f"shard {k} has columns {list(table.columns)}, shard 0 has {columns}",
                fix="rerun every shard with the same code (delete the shard outputs)",
            )
    return pd.concat(parts, ignore_index=True)
