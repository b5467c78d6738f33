"""Explicit "skipped" outputs for a method the fidelity gate rules out for one model.

A rule whose method is ruled out still writes its normal outputs, so the workflow completes and
every other figure is built: the table is a one-row Parquet file with a single ``skipped``
column (the reason), and the figure rule turns it into a placeholder PNG/SVG that says so and a
caption JSON with the usual keys plus ``"skipped": "<reason>"``, which the report shows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lenslab.io import write_parquet

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
