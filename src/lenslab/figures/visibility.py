"""F15: visibility maps: what one hidden state sees (earlier states) and reaches (later ones)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure


def _grid(rows: pd.DataFrame, index: str, columns: str) -> np.ndarray:
    return rows.pivot_table(index=index, columns=columns, values="value").to_numpy()


def query_cell(table: pd.DataFrame, layer: int, pos: int) -> tuple[int, int]:
    """The query cell with negative indices counted from the end."""
    n_layers = int(table["query_layer"].max()) + 1
    n_pos = int(table["query_pos"].max()) + 1
    return layer % n_layers, pos % n_pos


def plot_visibility(table: pd.DataFrame, layer: int, pos: int, model: str) -> tuple[Figure, str]:
    """Two heatmaps (state layer x position) for the query cell ``(layer, pos)``; negative
    indices count from the end. Zero cells (no influence: later positions or layers) are blank."""
    n_pos = int(table["query_pos"].max()) + 1
    layer, pos = query_cell(table, layer, pos)
    sees = _grid(
        table[(table.query_layer == layer) & (table.query_pos == pos)], "layer", "position"
    )
    reaches = _grid(
        table[(table.layer == layer) & (table.position == pos)], "query_layer", "query_pos"
    )
    tokens = table.drop_duplicates("position").sort_values("position")["token"].tolist()
    positive = np.concatenate([sees[sees > 0], reaches[reaches > 0]])
    norm = LogNorm(vmin=float(positive.min()), vmax=float(positive.max()))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.28 * n_pos + 3), 7.5), sharex=True)
    for ax, grid, title in (
        (axes[0], sees, f"what h({layer}, {pos}) sees: |d s(h({layer},{pos})) / d h(l', t')|"),
        (
            axes[1],
            reaches,
            f"what h({layer}, {pos}) reaches: |d s(h(l', t')) / d h({layer},{pos})|",
        ),
    ):
        im = ax.imshow(
            np.ma.masked_equal(grid, 0),
            norm=norm,
            cmap="viridis",
            aspect="auto",
            origin="lower",
            interpolation="nearest",
        )
        ax.plot(pos, layer, marker="s", mfc="none", mec="red", ms=9, mew=1.5)
        ax.set_ylabel("layer l = resid[l]")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, label="summed |gradient|")
    axes[1].set_xticks(range(n_pos), tokens, rotation=90, fontsize=7)
    axes[1].set_xlabel("position")
    seen_pos = sees.sum(axis=0)
    top = int(np.argmax(seen_pos[:pos] if pos else seen_pos))
    caption = (
        f"Visibility on {model}: influence of each hidden state on the query state at layer "
        f"{layer}, position {pos} ({tokens[pos]!r}), measured as the gradient of a scalar of the "
        "query state (sum of |h / ||h||_2| by default) summed in absolute value over the hidden "
        "dimension (top), and the influence of the query state on every later state (bottom). "
        "Log colour scale; blank cells are exactly zero: no influence flows from later positions "
        f"or later layers (checked). Among earlier positions the query sees {tokens[top]!r} "
        "most."
    )
    fig.tight_layout()
    return fig, caption
