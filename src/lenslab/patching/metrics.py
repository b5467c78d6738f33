"""Scores of patched runs, ROME's token categories, and category means with confidence intervals.

Metrics (all at the last prompt position, from the clean answer's point of view):

``prob``
    softmax probability of the clean answer;
``logit_diff``
    logit of the clean answer minus logit of the corrupt answer (LD);
``norm_ld``
    ``(LD_patched - LD_corrupt) / (LD_clean - LD_corrupt)``: 0 = corrupted run, 1 = clean run.

With several noise samples every score is the mean over samples, and ``norm_ld`` normalises
the *mean* LD (``LD_corrupt`` is the mean over the samples' unpatched runs), so the mean of the
unpatched runs is exactly 0 and a full restore exactly 1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lenslab.errors import LensLabError
from lenslab.options import PATCHING_METRICS

if TYPE_CHECKING:  # torch only for scores(): the F13 figure and findings jobs read tables
    from torch import Tensor

METRICS = PATCHING_METRICS
# ROME's categories (Meng et al. 2022, fig. 2 / appendix): a position may be in two of them
# (a one-token subject is both its first and last token).
CATEGORIES = (
    "first subject",
    "middle subject",
    "last subject",
    "first after subject",
    "further tokens",
    "last token",
)


def scores(logits: Tensor, clean_id: int, corrupt_id: int) -> dict[str, Tensor]:
    """``prob`` and ``logit_diff`` of last-position logits ``[..., V]`` (float64)."""
    import torch

    logits = logits.double()
    return {
        "prob": torch.softmax(logits, -1)[..., clean_id],
        "logit_diff": logits[..., clean_id] - logits[..., corrupt_id],
    }


def normalise(ld: Tensor | float, ld_clean: float, ld_corrupt: float) -> Tensor | float:
    """``(LD - LD_corrupt) / (LD_clean - LD_corrupt)``; NaN where corruption changed nothing."""
    span = ld_clean - ld_corrupt
    if abs(span) < 1e-9:
        return ld * math.nan
    return (ld - ld_corrupt) / span


def token_categories(n_tokens: int, subject: list[int]) -> dict[str, list[int]]:
    """Positions of each ROME category for a prompt of ``n_tokens`` with subject positions."""
    if not subject:
        raise LensLabError(
            "token categories need the subject's positions",
            fix="give the prompt a `subject` that occurs in its text",
        )
    first, last = min(subject), max(subject)
    return {
        "first subject": [first],
        "middle subject": list(range(first + 1, last)),
        "last subject": [last],
        "first after subject": [last + 1] if last + 1 < n_tokens else [],
        "further tokens": list(range(last + 2, n_tokens - 1)),
        "last token": [n_tokens - 1],
    }


# Two-sided 95 % Student-t quantiles for 1..30 degrees of freedom (no scipy dependency).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """Two-sided 95 % t quantile; beyond 30 df a Cornish-Fisher step from the normal."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df)


def mean_ci(values: np.ndarray) -> tuple[float, float, float, int]:
    """Mean and 95 % t confidence interval over finite values; (mean, lo, hi, n)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if n == 1:
        return m, math.nan, math.nan, 1
    half = t_quantile_975(n - 1) * float(v.std(ddof=1)) / math.sqrt(n)
    return m, m - half, m + half, n


def category_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, window, metric, category, layer): mean over prompts with a 95 % CI.

    Each prompt contributes one value per category: the mean over its positions in that
    category (categories a prompt lacks, e.g. a middle subject token, are left out for it).
    ``table`` is the patching table (columns prompt_id, kind, window, metric, layer, position,
    is_subject, value).
    """
    per_prompt = []
    for pid, rows in table.groupby("prompt_id", sort=False):
        n_tokens = int(rows["position"].max()) + 1
        subject = sorted(rows.loc[rows["is_subject"], "position"].unique().tolist())
        for cat, positions in token_categories(n_tokens, subject).items():
            if not positions:
                continue
            sel = rows[rows["position"].isin(positions)]
            means = sel.groupby(["kind", "window", "metric", "layer"], sort=False)["value"].mean()
            per_prompt.append(means.reset_index().assign(prompt_id=pid, category=cat))
    if not per_prompt:
        raise LensLabError("the patching table is empty", fix="rerun the patching rule")
    df = pd.concat(per_prompt, ignore_index=True)
    out = []
    keys = ["kind", "window", "metric", "category", "layer"]
    for key, rows in df.groupby(keys, sort=True):
        m, lo, hi, n = mean_ci(rows["value"].to_numpy())
        out.append((*key, m, lo, hi, n))
    return pd.DataFrame(out, columns=[*keys, "mean", "ci_low", "ci_high", "n_prompts"])
