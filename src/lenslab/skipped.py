"""Explicit "skipped" outputs for a method the fidelity gate rules out for one model.

A rule whose method is ruled out still writes its normal outputs, so the workflow completes and
every other figure is built: the table is a one-row Parquet file with a single ``skipped``
column (the reason), and the figure rule turns it into a placeholder PNG/SVG that says so and a
caption JSON with the usual keys plus ``"skipped": "<reason>"``, which the report shows.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from lenslab.io import read_json, write_json, write_parquet

SKIP_COLUMN = "skipped"


def skip_reason(adapter, *methods: str) -> str | None:
    """The gate's reason when any of ``methods`` is ruled out for ``adapter``, else None."""
    for method in methods:
        err = adapter.fidelity.failure(method)
        if err is not None:
            return str(err)
    return None


def write_skipped_table(path: str | Path, reason: str) -> None:
    """The rule's table as a skip marker (one row, one ``skipped`` column)."""
    print(f"skipped: {reason}")
    write_parquet(pd.DataFrame({SKIP_COLUMN: [reason]}), path)


def skipped(table: pd.DataFrame) -> str | None:
    """The reason when ``table`` is a skip marker, else None."""
    if SKIP_COLUMN in table.columns and len(table.columns) == 1:
        return str(table[SKIP_COLUMN].iloc[0])
    return None


def save_skipped_figure(png_path: str | Path, title: str, reason: str) -> None:
    """A placeholder figure saying what was skipped and why, with a ``skipped`` caption key."""
    import matplotlib.pyplot as plt  # lazy: only figure rules draw

    from lenslab.figures.save import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    ax.axis("off")
    body = "\n".join(textwrap.wrap(f"Skipped: {reason}", 90))
    ax.text(0.0, 1.0, f"{title}\n\n{body}", va="top", ha="left", fontsize=8, wrap=True)
    caption = f"Not computed for this model: {reason}"
    save_figure(fig, png_path, title, caption)
    json_path = Path(png_path).with_suffix(".json")
    write_json({**read_json(json_path), SKIP_COLUMN: reason}, json_path)
