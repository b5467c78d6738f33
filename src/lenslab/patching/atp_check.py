"""The F13c stage: AtP / AtP* over every node of every prompt, and their error measured by exact
patching of the top-k nodes and a random sample (or all nodes) in the same run.

Three tables per model and prompt set:

``nodes``
    one row per (prompt, kind, layer, head, position) from the first corrupted position on
    (before it the clean and corrupted runs are the same computation and every effect is 0):
    ``atp`` (signed) and ``atp_star`` (GradDrop magnitude) estimates and ``exact`` (NaN when
    not verified) of the change in logit difference, and the same divided by the prompt's
    ``LD_clean - LD_corrupt`` (``*_norm``, F13's normalised scale);
``summary``
    per kind and method, over the verified nodes of all prompts (normalised units): Spearman
    and Pearson correlation with exact patching (AtP signed against exact; AtP*, a magnitude,
    against |exact|; ``spearman_abs`` compares magnitudes for both), mean top-k recall per
    prompt, errors, and whether every node was verified;
``misses``
    the largest false negatives: nodes in a prompt's true top-k by |exact| that the method
    ranks below k.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd
import torch

from lenslab.models.adapter import ModelAdapter
from lenslab.patching.atp import Estimates, Run, estimate
from lenslab.patching.config import AtpConfig, PatchingConfig
from lenslab.patching.corrupt import Case
from lenslab.patching.run import Patch, Patcher
from lenslab.patching.sweep import build_cases, corrupt_answer, first_corrupted

NODE_COLUMNS = [
    "prompt_id", "corrupt_id", "mode", "kind", "layer", "head", "position", "token",
    "is_subject", "atp", "atp_star", "exact", "verified", "atp_norm", "atp_star_norm",
    "exact_norm", "span", "n_samples",
]  # fmt: skip
METHODS = ("atp", "atp_star")


def _ld(logits: torch.Tensor, good: int, bad: int) -> torch.Tensor:
    logits = logits.double()
    return (logits[..., good] - logits[..., bad])[..., None]


def _mean(parts: list[Estimates], field: str) -> dict[str, torch.Tensor] | None:
    dicts = [getattr(p, field) for p in parts]
    if dicts[0] is None:
        return None
    return {k: torch.stack([d[k] for d in dicts]).mean(0) for k in dicts[0]}


def _node_frame(case: Case, patcher: Patcher, atp: dict, star: dict | None, kinds) -> pd.DataFrame:
    """Every node of ``kinds`` from the first corrupted position on, with its estimates."""
    first, T = first_corrupted(case), len(case.clean_ids)
    rows = []
    for kind in kinds:
        if kind == "head":
            cells = [
                (j, h, t)
                for j in sorted(patcher.head_splits)
                for h in range(atp["head"].shape[1])
                for t in range(first, T)
            ]
        else:
            cells = [(j, -1, t) for j in range(patcher.L) for t in range(first, T)]
        for j, h, t in cells:
            idx = (j, h, t) if kind == "head" else (j, t)
            rows.append(
                (
                    kind,
                    j,
                    h,
                    t,
                    float(atp[kind][idx]),
                    float("nan") if star is None else float(star[kind][idx]),
                )
            )
    frame = pd.DataFrame(rows, columns=["kind", "layer", "head", "position", "atp", "atp_star"])
    frame["token"] = [case.tokens[t] for t in frame["position"]]
    frame["is_subject"] = frame["position"].isin(set(case.subject))
    return frame


def _select(frame: pd.DataFrame, cfg: AtpConfig, case_id: str) -> np.ndarray:
    """Which nodes of one prompt to patch exactly: all, or per kind the top-k by |AtP| and by
    |AtP*| plus a seeded random sample of the rest."""
    if len(frame) <= cfg.verify_all:
        return np.ones(len(frame), dtype=bool)
    rng = np.random.default_rng(cfg.verify_seed * 1_000_003 + zlib.crc32(case_id.encode()))
    chosen = np.zeros(len(frame), dtype=bool)
    for _, rows in frame.groupby("kind", sort=True):
        idx = rows.index.to_numpy()
        picked = set()
        for method in METHODS:
            mag = rows[method].abs().fillna(-1.0).to_numpy()
            picked |= set(idx[np.argsort(-mag, kind="stable")[: cfg.verify_top_k]])
        rest = np.array(sorted(set(idx) - picked))
        if len(rest):
            n = min(cfg.verify_random, len(rest))
            picked |= set(rng.choice(rest, size=n, replace=False))
        chosen[sorted(picked)] = True
    return chosen


def _exact(patcher: Patcher, frame: pd.DataFrame, good: int, bad: int) -> np.ndarray:
    """Exact effects (mean over corrupted runs) of the nodes of ``frame``."""
    patches = [
        Patch(k, (int(j),), (int(t),), () if k != "head" else (int(h),))
        for k, j, h, t in frame[["kind", "layer", "head", "position"]].itertuples(index=False)
    ]
    if not patches:
        return np.zeros(0)
    base = torch.stack([_ld(tr.logits, good, bad) for tr in patcher.corrupt]).mean()
    patched = patcher.run(patches, reduce=lambda lg: _ld(lg, good, bad))  # [S, n, 1]
    return (patched[..., 0].double().mean(0) - base).numpy()


def atp_case_tables(
    adapter: ModelAdapter,
    cases: list[Case],
    pcfg: PatchingConfig,
    acfg: AtpConfig,
) -> pd.DataFrame:
    """The node table of a group of cases: their runs are estimated in shared batches."""
    patchers, runs, owners, wrongs = [], [], [], []
    for c, case in enumerate(cases):
        patcher = Patcher(
            adapter,
            case.clean_ids,
            corrupt_ids=case.corrupt_ids,
            noise=case.noise,
            runner=pcfg.runner,
            batch_size=pcfg.batch_size,
        )
        wrong = corrupt_answer(case, torch.stack([t.logits for t in patcher.corrupt]))
        patchers.append(patcher)
        wrongs.append(wrong)
        corrupt = tuple(case.corrupt_ids or case.clean_ids)
        for s in range(patcher.n_samples):
            noise = None if case.noise is None else case.noise[s]
            runs.append(Run(tuple(case.clean_ids), corrupt, case.clean_answer, wrong, noise))
            owners.append(c)
    ests = estimate(adapter, runs, acfg.batch_size, acfg.graddrop)
    frames = []
    for c, case in enumerate(cases):
        patcher, wrong = patchers[c], wrongs[c]
        mine = [e for e, o in zip(ests, owners, strict=True) if o == c]
        frame = _node_frame(case, patcher, _mean(mine, "atp"), _mean(mine, "graddrop"), acfg.kinds)
        chosen = _select(frame, acfg, case.id)
        frame["exact"] = np.nan
        frame.loc[chosen, "exact"] = _exact(patcher, frame[chosen], case.clean_answer, wrong)
        frame["verified"] = chosen
        clean_ld = float(_ld(patcher.clean.logits, case.clean_answer, wrong)[0])
        base = torch.stack([_ld(t.logits, case.clean_answer, wrong) for t in patcher.corrupt])
        span = clean_ld - float(base.mean())
        frame["span"] = span
        for col in ("atp", "atp_star", "exact"):
            # AtP* is a magnitude: scaled by |span|, so it stays comparable with |exact_norm|.
            scale = abs(span) if col == "atp_star" else span
            frame[f"{col}_norm"] = frame[col] / scale if abs(span) > 1e-9 else np.nan
        frame["prompt_id"], frame["corrupt_id"], frame["mode"] = case.id, case.corrupt, case.mode
        frame["n_samples"] = patcher.n_samples
        frames.append(frame[NODE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def run_atp(
    adapter: ModelAdapter,
    prompt_set: Any,
    pcfg: PatchingConfig,
    acfg: AtpConfig,
    prepend_bos: bool | None = None,
) -> dict[str, pd.DataFrame]:
    """The ``nodes``, ``summary`` and ``misses`` tables of one prompt set."""
    cases = build_cases(adapter, prompt_set, pcfg, prepend_bos)
    # Groups of cases whose corrupted runs fill about one estimation batch.
    per_case = max(1, acfg.batch_size // (pcfg.noise_samples if cases[0].noise is not None else 1))
    nodes = pd.concat(
        [
            atp_case_tables(adapter, cases[i : i + per_case], pcfg, acfg)
            for i in range(0, len(cases), per_case)
        ],
        ignore_index=True,
    )
    return {
        "nodes": nodes,
        "summary": summarise(nodes, acfg.verify_top_k),
        "misses": misses(nodes, acfg.verify_top_k, acfg.n_misses),
    }


# -- measuring the error (numpy / pandas only) ----------------------------------------------
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of average ranks (ties share their mean rank)."""
    ra = pd.Series(np.asarray(a, float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, float)).rank().to_numpy()
    return pearson(ra, rb)


def _estimate(rows: pd.DataFrame, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, target) in normalised units: AtP against exact, AtP* against |exact|."""
    est = rows[f"{method}_norm"].to_numpy(float)
    exact = rows["exact_norm"].to_numpy(float)
    return est, (exact if method == "atp" else np.abs(exact))


def _ranked(rows: pd.DataFrame, method: str) -> pd.DataFrame:
    out = rows.copy()
    out["exact_rank"] = out["exact_norm"].abs().rank(ascending=False, method="first")
    out["estimate_rank"] = out[f"{method}_norm"].abs().rank(ascending=False, method="first")
    return out


def summarise(nodes: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per kind and method: correlations, recall@k, errors over the verified nodes."""
    out = []
    checked = nodes[nodes["verified"] & np.isfinite(nodes["exact_norm"])]
    for kind, rows in checked.groupby("kind", sort=True):
        everything = bool(nodes.loc[nodes["kind"] == kind, "verified"].all())
        for method in METHODS:
            est, target = _estimate(rows, method)
            ok = np.isfinite(est) & np.isfinite(target)
            if not ok.any():
                continue
            recalls = []
            for _, prompt in rows[ok].groupby("prompt_id", sort=False):
                ranked = _ranked(prompt, method)
                kk = min(k, len(ranked))
                top = ranked["exact_rank"] <= kk
                recalls.append(float((ranked.loc[top, "estimate_rank"] <= kk).mean()))
            err = est[ok] - target[ok]
            out.append(
                {
                    "kind": kind,
                    "method": method,
                    "target": "exact" if method == "atp" else "|exact|",
                    "n": int(ok.sum()),
                    "n_prompts": int(rows.loc[ok, "prompt_id"].nunique()),
                    "complete": everything,
                    "spearman": spearman(est[ok], target[ok]),
                    "pearson": pearson(est[ok], target[ok]),
                    "spearman_abs": spearman(np.abs(est[ok]), np.abs(target[ok])),
                    "recall_at_k": float(np.mean(recalls)),
                    "k": k,
                    "max_abs_error": float(np.abs(err).max()),
                    "median_abs_error": float(np.median(np.abs(err))),
                    "max_abs_exact": float(np.abs(target[ok]).max()),
                }
            )
    return pd.DataFrame(out)


def misses(nodes: pd.DataFrame, k: int, n: int) -> pd.DataFrame:
    """The ``n`` largest false negatives per kind and method (normalised units)."""
    frames = []
    checked = nodes[nodes["verified"] & np.isfinite(nodes["exact_norm"])]
    for _, prompt in checked.groupby(["kind", "prompt_id"], sort=True):
        for method in METHODS:
            ranked = _ranked(prompt, method)
            kk = min(k, len(ranked))
            missed = ranked[(ranked["exact_rank"] <= kk) & (ranked["estimate_rank"] > kk)]
            frames.append(missed.assign(method=method, estimate=missed[f"{method}_norm"]))
    cols = [
        "kind", "method", "prompt_id", "layer", "head", "position", "token", "exact_norm",
        "estimate", "estimate_rank", "exact_rank",
    ]  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=cols)
    found = pd.concat(frames, ignore_index=True)
    found["size"] = found["exact_norm"].abs()
    found = found.sort_values(["kind", "method", "size"], ascending=[True, True, False])
    return found.groupby(["kind", "method"], sort=True).head(n)[cols].reset_index(drop=True)
