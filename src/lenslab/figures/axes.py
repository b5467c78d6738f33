"""Axis helpers shared by the figures."""

from __future__ import annotations


def thin_ticks(n: int, max_labels: int = 16) -> list[int]:
    """Indices of the tick labels to print on an axis of ``n`` cells: all up to ``max_labels``,
    else every k-th (k the smallest step that fits) and always the last."""
    if n <= max_labels:
        return list(range(n))
    step = -(-n // max_labels)
    shown = list(range(0, n, step))
    if shown[-1] != n - 1:
        if n - 1 - shown[-1] <= step / 2:
            shown[-1] = n - 1  # no two labels closer than half a step
        else:
            shown.append(n - 1)
    return shown


def thin_labels(labels: list) -> tuple[list[int], list[str]]:
    """Tick positions and their labels, thinned by :func:`thin_ticks` (30-50 layers stay
    legible)."""
    shown = thin_ticks(len(labels))
    return shown, [str(labels[i]) for i in shown]
