"""Extract stage: tokens and the whole residual stream for a prompt set.

Output of the stage, read by every later stage:
- ``resid.safetensors``: ``resid.<k>`` ``[L+1, T_k, D]`` (resid[0] = embeddings, resid[L] =
  last block output *before* the final norm) and ``input_ids.<k>`` ``[T_k]`` for prompt ``k``;
  metadata: model name, prompt ids, the config slice it came from.
- ``tokens.parquet``: one row per (prompt, position): prompt_id, prompt_index, position,
  token_id, token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lenslab.errors import LensLabError
from lenslab.io import read_parquet, read_tensors, write_parquet, write_tensors
from lenslab.models.adapter import ModelAdapter
from lenslab.prompts import EncodedPrompt

RESID_FILE = "resid.safetensors"
TOKENS_FILE = "tokens.parquet"


@dataclass
class Activations:
    """Residual streams of a prompt set, one entry per prompt (lengths differ)."""

    prompt_ids: list[str]
    input_ids: list[Tensor]  # [T_k]
    resid: list[Tensor]  # [L+1, T_k, D]
    meta: dict[str, Any] = field(default_factory=dict)

    def tokens_table(self, tokenizer=None) -> pd.DataFrame:
        rows = []
        for k, (pid, ids) in enumerate(zip(self.prompt_ids, self.input_ids, strict=True)):
            for pos, tid in enumerate(ids.tolist()):
                text = tokenizer.decode([tid]) if tokenizer is not None else str(tid)
                rows.append((pid, k, pos, tid, text))
        cols = ["prompt_id", "prompt_index", "position", "token_id", "token"]
        return pd.DataFrame(rows, columns=cols)


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


@torch.no_grad()
def extract(
    adapter: ModelAdapter,
    prompts: list[EncodedPrompt],
    batch_size: int = 8,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Activations:
    """Run the prompts in right-padded batches and keep each prompt's unpadded states.

    Right padding leaves every real token at its own position, and causal attention never looks
    ahead, so the states of real tokens equal those of a one-prompt run (to float rounding).
    """
    _check_lengths(adapter, prompts)
    pad = adapter.tokenizer.pad_token_id if adapter.tokenizer is not None else 0
    resid: list[Tensor] = []
    bar = tqdm(total=len(prompts), desc=f"extract {adapter.name}", disable=not progress)
    for batch in _batches(prompts, batch_size):
        lengths = [len(p.input_ids) for p in batch]
        width = max(lengths)
        ids = torch.full((len(batch), width), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(batch):
            ids[row, : len(p.input_ids)] = torch.tensor(p.input_ids)
            mask[row, : len(p.input_ids)] = 1
        states = adapter.resid(ids.to(adapter.device), mask.to(adapter.device))
        for row, n in enumerate(lengths):
            resid.append(states[:, row, :n].to("cpu", dtype).clone())
        bar.update(len(batch))
    bar.close()
    return Activations(
        prompt_ids=[p.id for p in prompts],
        input_ids=[torch.tensor(p.input_ids) for p in prompts],
        resid=resid,
    )


def _check_lengths(adapter: ModelAdapter, prompts: list[EncodedPrompt]) -> None:
    """A prompt longer than the model's context fails deep inside torch; say so up front."""
    config = adapter.model.config
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    for p in prompts:
        if limit and len(p.input_ids) > limit:
            raise LensLabError(
                f"prompt {p.id!r} is {len(p.input_ids)} tokens, longer than the model's context "
                f"of {limit}",
                fix="shorten the prompt or use a model with a longer context",
            )


def save_activations(acts: Activations, out_dir: str | Path, tokenizer=None) -> None:
    """Write ``resid.safetensors`` and ``tokens.parquet`` into ``out_dir`` (each atomically)."""
    out_dir = Path(out_dir)
    tensors: dict[str, Tensor] = {}
    for k, (ids, states) in enumerate(zip(acts.input_ids, acts.resid, strict=True)):
        tensors[f"resid.{k}"] = states
        tensors[f"input_ids.{k}"] = ids
    meta = {**acts.meta, "prompt_ids": acts.prompt_ids}
    write_tensors(tensors, out_dir / RESID_FILE, meta)
    write_parquet(acts.tokens_table(tokenizer), out_dir / TOKENS_FILE)


def _stage_dir(path: str | Path) -> Path:
    """Accept the stage directory or any file in it."""
    path = Path(path)
    return path.parent if path.suffix else path


def load_activations(out_dir: str | Path) -> Activations:
    """Read what :func:`save_activations` wrote; a damaged file is a clear error."""
    tensors, meta = read_tensors(_stage_dir(out_dir) / RESID_FILE)
    prompt_ids = meta.pop("prompt_ids")
    n = len(prompt_ids)
    return Activations(
        prompt_ids=prompt_ids,
        input_ids=[tensors[f"input_ids.{k}"] for k in range(n)],
        resid=[tensors[f"resid.{k}"] for k in range(n)],
        meta=meta,
    )


def load_tokens(out_dir: str | Path) -> pd.DataFrame:
    return read_parquet(_stage_dir(out_dir) / TOKENS_FILE)
