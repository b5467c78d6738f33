"""F18: the Jacobian lens against the logit and tuned lenses (held-out KL to the output, top-1
agreement) and the J-lens readout of one prompt."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from lenslab.figures.tuned_lens import Trajectory, _curve_panel, _trajectory_panel


def plot_f18(readout: Trajectory, tokens: list[str], table: pd.DataFrame, colour: str) -> Figure:
    """J-lens readout on top; KL(final || lens) and top-1 agreement per layer below."""
    fig = plt.figure(figsize=(max(10.0, 0.8 * len(tokens) + 2), 9.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.5, 1], hspace=0.45, wspace=0.25)
    ax = fig.add_subplot(grid[0, :])
    image = _trajectory_panel(ax, readout, tokens, colour, "Jacobian lens readout (top-1)")
    label = "top-1 probability" if colour == "prob" else "entropy (nats)"
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.02, label=label)
    _curve_panel(
        fig.add_subplot(grid[1, 0]),
        table,
        "kl",
        "nats_per_token",
        "KL(final || lens), nats per token",
    )
    top = fig.add_subplot(grid[1, 1])
    _curve_panel(top, table, "top1", "share", "top-1 agreement with the model's output")
    top.set_ylim(0, 1.02)
    return fig


def f18_caption(prompt_text: str, colour: str, table: pd.DataFrame, description: str) -> str:
    row = table.iloc[0]
    kl = table[table.metric == "kl"].pivot(index="layer", columns="lens", values="value")
    top1 = table[table.metric == "top1"].pivot(index="layer", columns="lens", values="value")
    mid = int(kl.index.max()) // 2
    colour_text = "probability of that token" if colour == "prob" else "entropy (nats)"
    numbers = ", ".join(
        f"{lens} {kl.loc[mid, lens]:.3g} nats / {top1.loc[mid, lens]:.0%}" for lens in kl.columns
    )
    return (
        f'Top: the Jacobian lens readout of "{prompt_text}" (cell text = top-1 token at (layer, '
        f"position), colour = {colour_text}): {description}. The J-lens is fitted without "
        f"training, as the mean over held-out windows of the Jacobian of the last block's output "
        f"(summed over target positions t' >= t) with respect to resid[l] (averaged over source "
        f"positions t), skipping the first positions and the last. Bottom: per-layer KL(final || "
        f"lens) in nats per token (exact softmax; the last layer's is 0 and not drawn) and top-1 "
        f"agreement with the model's own output, for the logit, tuned and Jacobian lenses on "
        f"{int(row.n_windows)} held-out windows ({int(row.n_tokens)} tokens, every position with "
        f"a next token, the J-lens's skipped ones included), never fitted or trained on; bands = "
        f"{row.ci_level:.0%} bootstrap intervals over windows. At layer {mid}: {numbers}."
    )
