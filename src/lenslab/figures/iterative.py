"""F14: cosine between each block's residual update and the negative loss gradient."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lenslab.stats.aggregate import mean_ci


def plot_iterative(table: pd.DataFrame, model: str) -> tuple[Figure, str]:
    blocks = sorted(table["block"].unique())
    layers = [b + 1 for b in blocks]  # block b's update makes resid[b+1]: layer b+1
    stats = [mean_ci(table.loc[table["block"] == b, "cosine"].to_numpy()) for b in blocks]
    mean = np.array([s[0] for s in stats])
    lo, hi = np.array([s[1] for s in stats]), np.array([s[2] for s in stats])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.fill_between(layers, lo, hi, alpha=0.25, color="#1f77b4", label="95% CI")
    ax.plot(layers, mean, "o-", color="#1f77b4", label="mean over positions")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(layers)
    ax.set_xlabel("layer l: update resid[l] − resid[l−1] of block l−1")
    ax.set_ylabel("cos(update, −∇ loss at resid[l−1])")
    ax.legend(fontsize=8)
    fig.tight_layout()
    n = int((table["block"] == blocks[0]).sum())
    values = ", ".join(f"{m:.3f}" for m in mean)
    caption = (
        f"Residual updates vs gradients on {model}: for each layer l, the cosine between block "
        "l-1's update resid[l] - resid[l-1] and the negative gradient, with respect to the "
        "block's input resid[l-1], of the model's next-token loss summed over the prompt. "
        "Positive values mean the block moves the state downhill on the final loss. Mean over "
        f"{n} positions per layer (95% normal CI), layers {layers[0]}..{layers[-1]}: {values}. "
        "The table's `block` column is the block index l-1."
    )
    return fig, caption
