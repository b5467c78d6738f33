"""The F13 sweep: every (state kind, layer, position, window) patch of every case, as a table.

One row per (prompt, kind, layer, position, window, metric). ``value`` is the mean over noise
samples (one sample in pairs mode), ``value_std`` its standard deviation over samples;
``clean_value`` / ``corrupt_value`` are the unpatched runs' scores (the heatmaps' colour anchor).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.patching.config import PatchingConfig, resolve_mode
from lenslab.patching.corrupt import Case, noise_cases, pair_cases
from lenslab.patching.metrics import normalise
from lenslab.patching.run import Patch, Patcher, window_layers

log = logging.getLogger(__name__)

COLUMNS = [
    "prompt_id", "corrupt_id", "mode", "kind", "window", "layer", "position", "token",
    "corrupt_token", "is_subject", "metric", "value", "value_std", "clean_value",
    "corrupt_value", "n_samples", "clean_answer", "corrupt_answer", "runner",
]  # fmt: skip


@dataclass(frozen=True)
class Cell:
    kind: str
    window: int
    layer: int
    position: int
    patch: Patch


def sweep_cells(n_layers: int, n_tokens: int, kinds, windows) -> list[Cell]:
    """Every patch of the sweep; the residual stream always restores a single layer."""
    cells = []
    for kind in kinds:
        for window in (1,) if kind == "resid" else windows:
            for layer in range(n_layers):
                layers = window_layers(layer, window, n_layers)
                for t in range(n_tokens):
                    cells.append(Cell(kind, window, layer, t, Patch(kind, layers, (t,))))
    return cells


def build_cases(adapter: ModelAdapter, prompt_set: Any, cfg: PatchingConfig, prepend_bos=None):
    mode = resolve_mode(cfg.mode, prompt_set)
    if mode == "pairs":
        return pair_cases(adapter.tokenizer, prompt_set, prepend_bos)
    return noise_cases(
        adapter, prompt_set, cfg.noise_samples, cfg.noise_scale, cfg.noise_seed, prepend_bos
    )


def corrupt_answer(case: Case, corrupt_logits: Tensor) -> int:
    """The given corrupt answer, else the top-1 (mean probability over samples) != clean."""
    if case.corrupt_answer is not None:
        return case.corrupt_answer
    probs = torch.softmax(corrupt_logits.double(), -1).mean(0)
    probs[case.clean_answer] = -1.0
    return int(probs.argmax())


def first_corrupted(case: Case) -> int:
    """The first position whose input the corruption changes (token or embedding noise)."""
    if case.noise is not None:
        changed = case.noise.abs().amax(dim=(0, 2)) > 0
        return int(changed.nonzero()[0]) if bool(changed.any()) else len(case.clean_ids)
    differ = [
        i
        for i, (a, b) in enumerate(zip(case.clean_ids, case.corrupt_ids or [], strict=True))
        if a != b
    ]
    return differ[0] if differ else len(case.clean_ids)


def _answer_scores(logits: Tensor, clean_id: int, corrupt_id: int) -> Tensor:
    """[..., V] logits -> [..., 2]: (probability of the clean answer, logit difference)."""
    logits = logits.double()
    prob = torch.softmax(logits, -1)[..., clean_id]
    return torch.stack([prob, logits[..., clean_id] - logits[..., corrupt_id]], -1)


@torch.no_grad()
def patch_case(adapter: ModelAdapter, case: Case, cfg: PatchingConfig) -> pd.DataFrame:
    """The sweep for one case, as rows of the F13 table."""
    patcher = Patcher(
        adapter,
        case.clean_ids,
        corrupt_ids=case.corrupt_ids,
        noise=case.noise,
        runner=cfg.runner,
        batch_size=cfg.batch_size,
    )
    corrupt_logits = torch.stack([t.logits for t in patcher.corrupt])  # [S, V]
    wrong = corrupt_answer(case, corrupt_logits)
    clean = _answer_scores(patcher.clean.logits, case.clean_answer, wrong)  # [2]
    base = _answer_scores(corrupt_logits, case.clean_answer, wrong).mean(0)  # [2]
    cells = sweep_cells(
        adapter.n_layers, len(case.clean_ids), cfg.kinds, cfg.windows(adapter.n_layers)
    )
    # Before the first corrupted position the clean and corrupt runs are the same computation
    # (causal attention), so restoring a state there is the corrupted run itself: not run.
    first = first_corrupted(case)
    todo = [k for k, c in enumerate(cells) if c.position >= first]
    scored = torch.empty(patcher.n_samples, len(cells), 2, dtype=torch.float64)
    scored[:] = _answer_scores(corrupt_logits, case.clean_answer, wrong).cpu()[:, None]
    scored[:, todo] = patcher.run(
        [cells[k].patch for k in todo],
        reduce=lambda logits: _answer_scores(logits, case.clean_answer, wrong),
    )  # [S, n, 2]
    mean, std = scored.mean(0), scored.std(0, correction=0)
    norm = normalise(mean[:, 1], float(clean[1]), float(base[1]))
    norm_std = std[:, 1] / abs(float(clean[1] - base[1]) or float("nan"))
    metrics = {
        "prob": (mean[:, 0], std[:, 0], float(clean[0]), float(base[0])),
        "logit_diff": (mean[:, 1], std[:, 1], float(clean[1]), float(base[1])),
        "norm_ld": (norm, norm_std, 1.0, 0.0),
    }
    return _rows(case, cells, metrics, patcher, adapter.tokenizer.decode, wrong)


def _rows(case: Case, cells: list[Cell], metrics: dict, patcher: Patcher, decode, wrong: int):
    subject = set(case.subject)
    corrupt_tokens = case.corrupt_tokens or case.tokens
    frames = []
    for metric, (values, stds, clean_v, corrupt_v) in metrics.items():
        frames.append(
            pd.DataFrame(
                {
                    "prompt_id": case.id,
                    "corrupt_id": case.corrupt,
                    "mode": case.mode,
                    "kind": [c.kind for c in cells],
                    "window": [c.window for c in cells],
                    "layer": [c.layer for c in cells],
                    "position": [c.position for c in cells],
                    "token": [case.tokens[c.position] for c in cells],
                    "corrupt_token": [corrupt_tokens[c.position] for c in cells],
                    "is_subject": [c.position in subject for c in cells],
                    "metric": metric,
                    "value": values.numpy(),
                    "value_std": stds.numpy(),
                    "clean_value": clean_v,
                    "corrupt_value": corrupt_v,
                    "n_samples": patcher.n_samples,
                    "clean_answer": decode([case.clean_answer]),
                    "corrupt_answer": decode([wrong]),
                    "runner": patcher.runner,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def run_patching(
    adapter: ModelAdapter,
    prompt_set: Any,
    cfg: PatchingConfig,
    prepend_bos: bool | None = None,
    progress: bool = True,
    bounds: tuple[int, int] | None = None,
    n_cases: int | None = None,
) -> pd.DataFrame:
    """The F13 table of a prompt set (cases in prompt-set order), or of the cases ``bounds``
    (start, stop) of one shard: cases are built from the whole set (tokenising is cheap and
    noise is seeded per prompt id), so the shards' tables, gathered in order, are the one-job
    table. ``n_cases``: how many cases the shards were planned for (checked)."""
    cases = build_cases(adapter, prompt_set, cfg, prepend_bos)
    if n_cases is not None and len(cases) != n_cases:
        raise LensLabError(
            f"prompt set {prompt_set['name']!r} gives {len(cases)} patching cases, but its "
            f"shards were planned for {n_cases}",
            fix="check that every pair's prompts exist and that noise-mode prompts have a subject",
        )
    start, stop = bounds or (0, len(cases))
    tables = [
        patch_case(adapter, case, cfg)
        for case in tqdm(cases[start:stop], desc=f"patching {adapter.name}", disable=not progress)
    ]
    table = pd.concat(tables, ignore_index=True)
    log.info("patching %s: runner %s", adapter.name, sorted(table["runner"].unique()))
    return table
