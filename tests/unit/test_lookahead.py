"""Look-ahead (F16) and detours (F16b) from hand-made lens tables with known answers."""

from __future__ import annotations

import pandas as pd
import pytest

from lenslab.figures.lookahead import detour_curves, lookahead_hits, plot_detour, plot_lookahead


def _lens_table() -> pd.DataFrame:
    """One prompt of tokens 10, 11, 12, 13 and two layers. Layer 0's top-5 at every position
    holds the token two ahead (and nothing else of the prompt); layer 1's holds the next one."""
    ids = [10, 11, 12, 13]
    rows = []
    for layer in (0, 1):
        for t, tok in enumerate(ids):
            ahead = 2 if layer == 0 else 1
            guess = ids[t + ahead] if t + ahead < len(ids) else 99
            tops = [guess, 90, 91, 92, 93]
            rows.append(
                {"prompt_id": "p", "layer": layer, "position": t, "token_id": tok}
                | {f"top{i + 1}_id": v for i, v in enumerate(tops)}
            )
    return pd.DataFrame(rows)


def test_lookahead_counts_hits_k_tokens_ahead():
    hits = lookahead_hits(_lens_table(), max_ahead=3).set_index(["layer", "ahead"])
    assert hits.loc[(0, 2), "top5"] == 1.0 and hits.loc[(0, 2), "n"] == 2  # t = 0, 1
    assert hits.loc[(0, 1), "top5"] == 0.0 and hits.loc[(0, 3), "top5"] == 0.0
    assert hits.loc[(1, 1), "top5"] == 1.0 and hits.loc[(1, 1), "n"] == 3
    assert hits.loc[(1, 2), "top5"] == 0.0
    fig, caption = plot_lookahead(_lens_table(), "toy", max_ahead=2)
    assert "t+1 1.00, t+2 0.00" in caption and "t+2 peaks at layer 0 (1.00)" in caption


def _targets() -> pd.DataFrame:
    """Two prompts of three tokens; the answer is also listed as a target (two roles)."""
    rows = []
    probs = {  # layer: (answer, other)
        0: (0.0, 0.1),
        1: (0.1, 0.6),
        2: (0.9, 0.05),
    }
    for pid, answer, other in (("a", "vash", "water"), ("b", "pyra", "fire")):
        for layer, (pa, po) in probs.items():
            for pos in range(3):
                scale = 1.0 if pos == 2 else 0.0  # only the last position counts
                rows += [
                    (pid, layer, pos, answer, "answer", pa * scale),
                    (pid, layer, pos, answer, "target", pa * scale),
                    (pid, layer, pos, other, "target", po * scale),
                ]
    return pd.DataFrame(rows, columns=["prompt_id", "layer", "position", "target", "role", "prob"])


def test_detour_reads_the_last_position_once_per_word():
    curves = detour_curves(_targets()).set_index(["layer", "role"])
    assert curves.loc[(1, "other"), "prob"] == pytest.approx(0.6)
    assert curves.loc[(2, "answer"), "prob"] == pytest.approx(0.9)
    assert (curves["n"] == 2).all()
    fig, caption = plot_detour(_targets(), "toy")
    assert "2 prompts" in caption and "leads at layers 0, 1 (peak 0.60 at layer 1)" in caption
    assert "tuned lens is not used" in caption
