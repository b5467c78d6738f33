"""Text-table figures (one text per cell), for views whose content is words: entity
resolution by layer, beam continuations by layer."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def text_table(
    cells: list[list[str]],
    row_labels: list[str],
    col_labels: list[str],
    colours: list[list[str]] | None = None,
    title: str = "",
    col_width: float = 2.2,
) -> Figure:
    """A matplotlib table of ``cells`` (rows x columns), optional cell colours."""
    n_rows, n_cols = len(cells), len(col_labels)
    fig, ax = plt.subplots(figsize=(1.2 + col_width * n_cols, 0.8 + 0.32 * (n_rows + 1)))
    ax.axis("off")
    table = ax.table(
        cellText=cells,
        rowLabels=row_labels,
        colLabels=col_labels,
        cellColours=colours,
        loc="center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.25)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def clip(text: str, n: int = 34) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
