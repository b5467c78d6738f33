"""Aggregates of the per-(layer, position) lens tables: per-layer means with confidence
intervals, lens-vs-lens paired differences and tracked-token summaries, all as tidy tables.

Every mean runs over the (prompt, position) rows of a layer, which are treated as independent
draws (positions of one prompt are correlated, so the intervals are optimistic; use several
prompts for honest error bars). ``normal``: mean +- z * sd / sqrt(n); ``bootstrap``: percentile
interval of ``n_boot`` resampled means from a generator seeded with ``seed`` (same input, same
bytes). Rows where a metric is undefined (NaN, e.g. the next token after the last position) are
left out of that metric's ``n``. :func:`wilson` is the interval of a proportion (F9's recall, the
patchscope views' precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from math import sqrt
from statistics import NormalDist

import numpy as np
import pandas as pd

from lenslab.errors import LensLabError

# metric name -> how to get it from the per-(layer, position) table
METRICS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "kl_final": lambda d: d["kl_final"],
    "kl_input": lambda d: d["kl_input"],
    "rev_kl_final": lambda d: d["rev_kl_final"],
    "js_final": lambda d: d["js_final"],
    "mse_logits": lambda d: d["mse_logits"],
    "cos_final": lambda d: d["cos_final"],
    "agree_top1": lambda d: d["agree_top1"].astype(float),
    "entropy": lambda d: d["entropy"],
    "xent_next": lambda d: d["xent_next"],
    "log10_rank_final_top1": lambda d: np.log10(d["rank_final_top1"]),
    "log10_rank_next": lambda d: np.log10(d["rank_next"]),
    "log10_rank_input": lambda d: np.log10(d["rank_input"]),
}
# Natural ranges: a normal interval is clipped to them (a rate cannot leave [0, 1]).
BOUNDS: dict[str, tuple[float, float]] = {
    "kl_final": (0.0, np.inf),
    "kl_input": (0.0, np.inf),
    "rev_kl_final": (0.0, np.inf),
    "js_final": (0.0, float(np.log(2.0))),
    "mse_logits": (0.0, np.inf),
    "cos_final": (-1.0, 1.0),
    "agree_top1": (0.0, 1.0),
    "entropy": (0.0, np.inf),
    "xent_next": (0.0, np.inf),
    "log10_rank_final_top1": (0.0, np.inf),
    "log10_rank_next": (0.0, np.inf),
    "log10_rank_input": (0.0, np.inf),
    "prob": (0.0, 1.0),
    "top1": (0.0, 1.0),
    "log10_rank": (0.0, np.inf),
}
KEYS = ["prompt_id", "position"]
SUMMARY_COLUMNS = ["lens", "layer", "metric", "mean", "std", "n", "ci_low", "ci_high", "ci"]
COMPARE_COLUMNS = [
    "lens_a", "lens_b", "layer", "metric", "mean_a", "mean_b", "mean_diff", "std", "n",
    "ci_low", "ci_high", "ci",
]  # fmt: skip


def mean_ci(
    x: np.ndarray,
    ci: str = "normal",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values of ``x``; the interval is clipped to ``bounds``."""
    mean, lo, hi = _mean_ci(x, ci, n_boot, seed, level)
    return mean, float(np.clip(lo, *bounds)), float(np.clip(hi, *bounds))


def _mean_ci(
    x: np.ndarray, ci: str, n_boot: int, seed: int, level: float
) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (np.nan, np.nan, np.nan)
    mean = float(x.mean())
    if x.size == 1:
        return (mean, mean, mean)
    if ci == "normal":
        half = NormalDist().inv_cdf(0.5 + level / 2) * x.std(ddof=1) / np.sqrt(x.size)
        return (mean, mean - half, mean + half)
    if ci == "bootstrap":
        rng = np.random.default_rng(seed)
        means = np.concatenate(
            [
                x[rng.integers(0, x.size, (min(100, n_boot - b), x.size))].mean(1)
                for b in range(0, n_boot, 100)
            ]
        )
        alpha = (1 - level) / 2
        lo, hi = np.quantile(means, [alpha, 1 - alpha])
        return (mean, float(lo), float(hi))
    raise LensLabError(f"unknown confidence interval {ci!r}", fix="use normal or bootstrap")


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (sensible at 0 and 1, unlike the normal one)."""
    if n == 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _metrics(df: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    names = list(metrics or [m for m in METRICS if _has(df, m)])
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise LensLabError(f"unknown metric(s) {unknown}", fix=f"use some of {list(METRICS)}")
    return names


def _has(df: pd.DataFrame, metric: str) -> bool:
    try:
        METRICS[metric](df.head(1))
        return True
    except KeyError:
        return False


def layer_means(
    df: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    ci: str = "normal",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (lens, layer, metric): mean, std, n and confidence interval over all rows."""
    rows = []
    for metric in _metrics(df, metrics):
        values = METRICS[metric](df).to_numpy(dtype=np.float64)
        for (lens, layer), idx in df.groupby(["lens", "layer"], sort=True).indices.items():
            x = values[idx]
            finite = x[np.isfinite(x)]
            mean, lo, hi = mean_ci(x, ci, n_boot, seed, bounds=BOUNDS[metric])
            std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
            rows.append((lens, int(layer), metric, mean, std, int(finite.size), lo, hi, ci))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def compare_lenses(
    df: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    ci: str = "normal",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired differences ``lens_a - lens_b`` per layer and metric, matched on (prompt,
    position); empty when only one lens was applied."""
    lenses = sorted(df["lens"].unique())
    rows = []
    for a, b in combinations(lenses, 2):
        da = df[df.lens == a].set_index([*KEYS, "layer"]).sort_index()
        db = df[df.lens == b].set_index([*KEYS, "layer"]).sort_index()
        common = da.index.intersection(db.index)
        da, db = da.loc[common], db.loc[common]
        layers = common.get_level_values("layer").to_numpy()
        for metric in _metrics(df, metrics):
            xa = METRICS[metric](da).to_numpy(dtype=np.float64)
            xb = METRICS[metric](db).to_numpy(dtype=np.float64)
            for layer in np.unique(layers):
                sel = layers == layer
                d = xa[sel] - xb[sel]
                finite = d[np.isfinite(d)]
                mean, lo, hi = mean_ci(d, ci, n_boot, seed)
                std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
                rows.append(
                    (a, b, int(layer), metric, float(np.nanmean(xa[sel])),
                     float(np.nanmean(xb[sel])), mean, std, int(finite.size), lo, hi, ci)
                )  # fmt: skip
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def target_means(
    tracked: pd.DataFrame, ci: str = "normal", n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Tracked tokens at each prompt's last position (where the answer is predicted): per
    (lens, layer, role) mean probability, log-probability, log10 rank and top-1 rate."""
    columns = ["lens", "layer", "role", "metric", "mean", "n", "ci_low", "ci_high", "ci"]
    if tracked.empty:
        return pd.DataFrame(columns=columns)
    last = tracked.groupby("prompt_id").position.transform("max") == tracked.position
    t = tracked[last]
    values = {
        "prob": t["prob"].to_numpy(np.float64),
        "logprob": t["logprob"].to_numpy(np.float64),
        "log10_rank": np.log10(t["rank"].to_numpy(np.float64)),
        "top1": (t["rank"] == 1).to_numpy(np.float64),
    }
    rows = []
    for (lens, layer, role), idx in t.groupby(["lens", "layer", "role"], sort=True).indices.items():
        for metric, x in values.items():
            mean, lo, hi = mean_ci(
                x[idx], ci, n_boot, seed, bounds=BOUNDS.get(metric, (-np.inf, np.inf))
            )
            rows.append((lens, int(layer), role, metric, mean, len(idx), lo, hi, ci))
    return pd.DataFrame(rows, columns=columns)
