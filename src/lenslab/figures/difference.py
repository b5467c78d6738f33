"""F1 figure: heatmap of ||h_clean - h_corrupt|| per (state, position) and one line per token."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lenslab.figures.save import layer_label


def _label(clean: str, corrupt: str) -> str:
    clean, corrupt = clean.replace(" ", "·"), corrupt.replace(" ", "·")
    return clean if clean == corrupt else f"{clean}/{corrupt}"


def _state_labels(states: list[str]) -> list[str]:
    """Rows in the one layer numbering: 'layer 0 (embeddings)' .. 'layer L', then the
    final-normed state (the table names them embed, block 1..L, final norm)."""
    last = len(states) - 2  # embed + L block outputs + final norm
    out = []
    for r, state in enumerate(states):
        if state == "final norm":
            out.append("final norm(layer L)")
        else:
            out.append(f"layer {layer_label(r, last)}")
    return out


def plot_difference(table: pd.DataFrame, title: str) -> Figure:
    """``table``: one pair's rows from :func:`lenslab.difference.pair_difference`."""
    grid = table.pivot(index="row", columns="position", values="l2").sort_index()
    states = _state_labels(table.drop_duplicates("row").sort_values("row")["state"].tolist())
    labels = [
        _label(a, b)
        for a, b in table.drop_duplicates("position")
        .sort_values("position")[["clean_token", "corrupt_token"]]
        .itertuples(index=False)
    ]
    fig, (ax_map, ax_line) = plt.subplots(
        1,
        2,
        figsize=(6 + 0.9 * len(labels), 0.35 * len(states) + 2.5),
        gridspec_kw={"width_ratios": [3, 2]},
    )
    values = grid.to_numpy()
    # Output at the top, as in the logit-lens figures.
    image = ax_map.imshow(values[::-1], aspect="auto", cmap="magma")
    ax_map.set_yticks(range(len(states)), states[::-1], fontsize=8)
    ax_map.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    for (i, j), v in np.ndenumerate(values[::-1]):
        ax_map.text(
            j,
            i,
            f"{v:.1f}",
            ha="center",
            va="center",
            fontsize=6,
            color="white" if v < 0.6 * np.nanmax(values) else "black",
        )
    fig.colorbar(image, ax=ax_map, label="L2 norm of difference")
    ax_map.set_title("||h_clean - h_corrupt||₂")
    for j, label in enumerate(labels):
        ax_line.plot(range(len(states)), values[:, j], marker="o", ms=3, label=label)
    ax_line.set_xticks(range(len(states)), states, rotation=90, fontsize=7)
    ax_line.set_ylabel("L2 norm of difference")
    ax_line.legend(fontsize=7, title="position", title_fontsize=7)
    ax_line.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
