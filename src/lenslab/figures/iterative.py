"""F14: cosine between each block's residual update and the negative loss gradient."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lenslab.stats.aggregate import mean_ci


def plot_iterative(table: pd.DataFrame, model: str) -> tuple[Figure, str]:
    blocks = sorted(table["block"].unique())
    stats = [mean_ci(table.loc[table["block"] == b, "cosine"].to_numpy()) for b in blocks]
    mean = np.array([s[0] for s in stats])
    lo, hi = np.array([s[1] for s in stats]), np.array([s[2] for s in stats])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.fill_between(blocks, lo, hi, alpha=0.25, color="#1f77b4", label="95% CI")
    ax.plot(blocks, mean, "o-", color="#1f77b4", label="mean over positions")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(blocks)
    ax.set_xlabel("block l (update h_{l+1} - h_l)")
    ax.set_ylabel("cos(update, -grad of loss at h_l)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    n = int((table["block"] == blocks[0]).sum())
    values = ", ".join(f"{m:.3f}" for m in mean)
    caption = (
        f"Residual updates vs gradients on {model}: for each block, the cosine between its "
        "update to the residual stream and the negative gradient, with respect to the block's "
        "input, of the model's next-token loss summed over the prompt. Positive values mean the "
        f"block moves the state downhill on the final loss. Mean over {n} positions per block "
        f"(95% normal CI): {values}."
    )
    return fig, caption
