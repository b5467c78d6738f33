"""F17: the same layer-vs-final comparison under six distances, side by side per layer.

Panels (per-layer means over every prompt and position of the set, 95% confidence band):
KL(final || layer), reverse KL(layer || final), Jensen-Shannon, MSE of mean-centred logits,
cosine of hidden states to the final residual state, and top-1 agreement with the final layer.
A last panel overlays all six, each rescaled to a "distance from the output" between 1 (its
largest value over layers) and 0, so their shapes can be compared on one axis.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lenslab.errors import LensLabError  # noqa: E402
from lenslab.lenses.catalog import lens_caption  # noqa: E402
from lenslab.options import DISTANCE_METRICS, DistanceOptions, parse_options  # noqa: E402
from lenslab.stats.config import LensConfig  # noqa: E402

# metric -> (panel title, y label, is a similarity (1 = identical) rather than a distance)
DISTANCES: dict[str, tuple[str, str, bool]] = {
    "kl_final": ("KL(final || layer)", "nats", False),
    "rev_kl_final": ("reverse KL(layer || final)", "nats", False),
    "js_final": ("Jensen-Shannon", "nats (max ln 2)", False),
    "mse_logits": ("MSE of centred logits", "logit$^2$", False),
    "cos_final": ("cosine of hidden states to final", "cosine", True),
    "agree_top1": ("top-1 agreement with final", "fraction of positions", True),
}
assert tuple(DISTANCES) == DISTANCE_METRICS  # the options schema lists the same metrics
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def parse_distance_options(options: Any) -> DistanceOptions:
    return parse_options(DistanceOptions, options)


def normalised(means: pd.DataFrame) -> pd.DataFrame:
    """Each (lens, metric) curve rescaled to a distance in [0, 1]: ``d / max(d)`` for
    distances, ``(1 - s) / max(1 - s)`` for similarities (cosine, agreement)."""
    out = []
    for (_lens, metric), g in means.groupby(["lens", "metric"], sort=True):
        y = g["mean"].to_numpy(dtype=float)
        if DISTANCES[metric][2]:
            y = 1.0 - y
        top = np.nanmax(np.abs(y)) if np.isfinite(y).any() else 0.0
        out.append(g.assign(scaled=y / top if top > 0 else y * 0.0))
    return pd.concat(out, ignore_index=True) if out else means.assign(scaled=[])


def distance_data(means: pd.DataFrame, opts: DistanceOptions) -> pd.DataFrame:
    """The per-layer means F17 draws (columns of :func:`lenslab.stats.aggregate.layer_means`)."""
    metrics = opts.metrics or list(DISTANCES)
    sub = means[means["metric"].isin(metrics)]
    if opts.lenses is not None:
        missing = sorted(set(opts.lenses) - set(sub["lens"]))
        if missing:
            raise LensLabError(
                f"lens(es) {missing} were not applied", fix="add them to lens.lenses or drop them"
            )
        sub = sub[sub["lens"].isin(opts.lenses)]
    if sub.empty:
        raise LensLabError("no per-layer distance means to draw", fix="run the lens_tables rule")
    return sub.sort_values(["lens", "metric", "layer"]).reset_index(drop=True)


def make_distances(
    means: pd.DataFrame, options: Any, cfg: LensConfig, n_prompts: int
) -> tuple[Figure, str, str]:
    """(figure, title, caption) of F17."""
    opts = parse_distance_options(options)
    data = distance_data(means, opts)
    metrics = [m for m in DISTANCES if m in set(data["metric"])]
    lenses = list(dict.fromkeys(data["lens"]))
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.8))
    flat = axes.ravel()
    for k, metric in enumerate(metrics):
        ax = flat[k]
        title, ylabel, _ = DISTANCES[metric]
        for i, lens in enumerate(lenses):
            g = data[(data.metric == metric) & (data.lens == lens)]
            ax.plot(
                g.layer, g["mean"], styles[i % 4], marker="o", ms=3, color=COLORS[k], label=lens
            )
            ax.fill_between(g.layer, g.ci_low, g.ci_high, color=COLORS[k], alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("layer l = resid[l] (0 = embeddings)")
        ax.grid(alpha=0.3)
        if len(lenses) > 1:
            ax.legend(fontsize=7)
    over = flat[len(metrics)]
    scaled = normalised(data)
    for k, metric in enumerate(metrics):
        for i, lens in enumerate(lenses):
            g = scaled[(scaled.metric == metric) & (scaled.lens == lens)]
            label = DISTANCES[metric][0] + (f" ({lens})" if len(lenses) > 1 else "")
            over.plot(
                g.layer, g.scaled, styles[i % 4], marker="o", ms=2, color=COLORS[k], label=label
            )
    over.set_title("all six, rescaled to [0, 1]", fontsize=10)
    over.set_ylabel("distance / its maximum")
    over.set_xlabel("layer l = resid[l]")
    over.grid(alpha=0.3)
    for ax in flat[len(metrics) + 1 :]:
        ax.axis("off")
    if len(metrics) + 1 < len(flat):  # the overlay's legend goes into the free panel
        flat[len(metrics) + 1].legend(*over.get_legend_handles_labels(), loc="center", fontsize=8)
    else:
        over.legend(fontsize=7)
    title = f"Distance choice: each layer against the final output ({', '.join(lenses)} lens)"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    caption = (
        f"Lens(es): {'; '.join(f'{n}: {lens_caption(n)}' for n in lenses)}. Per-layer means over "
        f"all positions of {n_prompts} prompt(s) with 95% {data['ci'].iloc[0]} confidence bands "
        "(rows = prompt x position, treated as independent). KL, reverse KL and JS in nats "
        f"(natural log), {cfg.clip_text} (JS never clipped); 'final' is the model's own output "
        "distribution. MSE: mean over the vocabulary of the squared difference of mean-centred "
        "logits. Cosine: between the lens-transformed state and the last residual state (both "
        "before the final norm). Top-1 agreement: fraction of positions whose top-1 token equals "
        "the final top-1. Last panel: every curve rescaled to d / max(d) (similarities as 1 - s), "
        "so all reach 0 at the output."
    )
    return fig, title, caption
