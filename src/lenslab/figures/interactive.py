"""Interactive views for the report: plain-JSON specs that the report draws with plotly.js.

A view is ``{"kind": "plotly", "data": [...], "layout": {...}}`` (plotly's own figure format)
or ``{"kind": "visibility", ...}`` (F15's every-cell map, drawn by the report's script). Specs
are built here from the same tables as the static figures, without importing plotly: the report
embeds plotly.js once. Numbers are rounded to 4 significant digits so the page stays small and
byte-stable.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lenslab.figures.logit_lens import (
    ViewOptions,
    parse_view_options,
    pick_layers,
    prompt_view,
    rank_text,
    visible,
)
from lenslab.figures.save import layer_label
from lenslab.stats.config import LensConfig

CELL_W, CELL_H = 58, 24  # pixels per heatmap cell: tokens stay readable, the page scrolls


def num(x: Any, digits: int = 4) -> float | None:
    """A float rounded to ``digits`` significant digits; None for NaN/inf (JSON null)."""
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def esc(text: str) -> str:
    """Token text safe inside plotly's HTML-like hover labels."""
    return html.escape(text, quote=False)


def heatmap(
    z: np.ndarray,
    *,
    xticks: Sequence[str],
    yticks: Sequence[str],
    hover: list[list[str]],
    title: str,
    colorbar: str,
    colorscale: str,
    text: list[list[str]] | None = None,
    zrange: tuple[float, float] | None = None,
    cbar_ticks: tuple[list[float], list[str]] | None = None,
    xtitle: str = "input token (position)",
    ytitle: str = "layer l = resid[l]",
    top_down: bool = True,
) -> dict[str, Any]:
    """One heatmap view: ``z[r, c]``, row 0 at the top when ``top_down``; ``hover`` HTML per
    cell; ``text`` printed in the cells."""
    rows, cols = z.shape
    trace: dict[str, Any] = {
        "type": "heatmap",
        "z": [[num(v) for v in row] for row in z],
        "x": list(range(cols)),
        "y": list(range(rows)),
        "customdata": hover,
        "hovertemplate": "%{customdata}<extra></extra>",
        "colorscale": colorscale,
        "xgap": 1,
        "ygap": 1,
        "colorbar": {"title": {"text": colorbar, "side": "right"}},
    }
    if text is not None:
        trace["text"] = text
        trace["texttemplate"] = "%{text}"
        trace["textfont"] = {"size": 10}
    if zrange is not None:
        trace["zmin"], trace["zmax"] = (num(zrange[0]), num(zrange[1]))
    if cbar_ticks is not None:
        trace["colorbar"]["tickvals"], trace["colorbar"]["ticktext"] = cbar_ticks
    width = max(520, 170 + CELL_W * cols)
    height = max(260, 190 + CELL_H * rows)
    layout = {
        "title": {"text": title, "font": {"size": 13}},
        "width": width,
        "height": height,
        "margin": {"l": 110, "r": 20, "t": 50, "b": 110},
        "xaxis": {
            "tickvals": list(range(cols)),
            "ticktext": list(xticks),
            "tickangle": -60,
            "title": {"text": xtitle},
        },
        "yaxis": {
            "tickvals": list(range(rows)),
            "ticktext": list(yticks),
            "autorange": "reversed" if top_down else True,
            "title": {"text": ytitle},
        },
    }
    return {"kind": "plotly", "data": [trace], "layout": layout}


# -- F2-F5: logit-lens views with the top-k of every cell --------------------------------------
def _topk_columns(view: pd.DataFrame) -> list[int]:
    k = 1
    while f"top{k + 1}_token" in view.columns:
        k += 1
    return list(range(1, k + 1))


def cell_hover(row: pd.Series, ks: list[int], value: str) -> str:
    """'layer 3, position 7 'tok' → next 'x'<br>value<br>top-k: 1. 'a' 0.41 ...'."""
    head = (
        f"<b>layer {int(row['layer'])}, position {int(row['position'])}</b> "
        f"input {esc(repr(str(row['token'])))}"
    )
    if int(row["next_token_id"]) >= 0:
        head += f", true next {esc(repr(str(row['next_token'])))}"
    lines = [head, value, f"top-{len(ks)} of the lens (probability):"]
    for k in ks:
        token = esc(repr(str(row[f"top{k}_token"])))
        lines.append(f"{k}. {token} {float(row[f'top{k}_prob']):.3f}")
    return "<br>".join(lines)


VALUE_NAMES = {
    "top1_logit": "logit of the top-1 token",
    "rank_final_top1": "rank of the model's final top-1",
    "kl_final": "KL(final || layer)",
    "kl_input": "KL(input || layer)",
    "rank_input": "rank of the input token",
}


def _lens_panel(
    view: pd.DataFrame, column: str, layers: list[int], kind: str, title: str, cfg: LensConfig
) -> dict[str, Any]:
    """One F2-F5 heatmap over every position; ``kind``: logit | rank | kl."""
    cells = view.set_index(["layer", "position"]).sort_index()
    positions = sorted(view["position"].unique())
    ks = _topk_columns(view)
    last = int(view["layer"].max())
    z = np.full((len(layers), len(positions)), np.nan)
    text = [[""] * len(positions) for _ in layers]
    hover = [[""] * len(positions) for _ in layers]
    for i, layer in enumerate(layers):
        for j, pos in enumerate(positions):
            row = cells.loc[(layer, pos)]
            value = float(row[column])
            row = row.copy()
            row["layer"], row["position"] = layer, pos
            if kind == "rank":
                z[i, j] = math.log10(max(value, 1.0))
                text[i][j] = rank_text(value)
                shown = f"{VALUE_NAMES.get(column, column)}: {int(value)}"
            else:
                z[i, j] = value
                text[i][j] = visible(str(row["top1_token"]))
                shown = f"{VALUE_NAMES.get(column, column)}: {value:.4g}"
                shown += " nats" if kind == "kl" else ""
            hover[i][j] = cell_hover(row, ks, shown)
    first = view.drop_duplicates("position").set_index("position")
    xticks = [f"{p} {visible(str(first.loc[p, 'token']))}" for p in positions]
    yticks = [layer_label(x, last) for x in layers]
    common = {"xticks": xticks, "yticks": yticks, "hover": hover, "text": text, "title": title}
    if kind == "rank":
        cap = max(
            2,
            min(
                cfg.rank_cap,
                int(view["vocab_size"].iloc[0]) if "vocab_size" in view else cfg.rank_cap,
            ),
        )
        top = math.log10(cap)
        ticks = [t for t in (1, 10, 100, 1000, 10_000, 100_000) if t <= cap]
        return heatmap(z, colorbar="rank (log)", colorscale="Blues", zrange=(0, top),
                       cbar_ticks=([math.log10(t) for t in ticks], [str(t) for t in ticks]),
                       **common)  # fmt: skip
    if kind == "kl":
        finite = z[np.isfinite(z)]
        cap = cfg.kl_cap or (float(np.percentile(finite, 95)) if finite.size else 1.0)
        return heatmap(z, colorbar="nats", colorscale="Blues", zrange=(0, max(cap, 1e-6)),
                       **common)  # fmt: skip
    lo, hi = np.nanpercentile(z, [5, 95]) if np.isfinite(z).any() else (0.0, 1.0)
    return heatmap(z, colorbar="logit", colorscale="Blues", zrange=(lo, max(hi, lo + 1e-6)),
                   **common)  # fmt: skip


LENS_PANELS = {
    "F2": [("top1_logit", "logit", "top-1 token, colour = its logit")],
    "F3": [("rank_final_top1", "rank", "rank of the model's final top-1 token")],
    "F4": [("kl_final", "kl", "KL(final || layer), nats")],
    "F5": [
        ("kl_input", "kl", "KL(input || layer), nats"),
        ("rank_input", "rank", "rank of the input token"),
    ],
}


def lens_views(fid: str, table: pd.DataFrame, options: Any, cfg: LensConfig) -> dict | None:
    """The interactive panels of F2-F5 (every position, every shown layer); None for F6."""
    if fid not in LENS_PANELS:
        return None
    opts: ViewOptions = parse_view_options(options)
    lens = opts.lens or cfg.lenses[0]
    view = prompt_view(table, opts, lens)
    layers = pick_layers(view["layer"].unique().tolist(), opts.layer_step)
    pid = view["prompt_id"].iloc[0]
    panels = [
        _lens_panel(view, col, layers, kind, f"{title} ({lens} lens, prompt {pid})", cfg)
        for col, kind, title in LENS_PANELS[fid]
    ]
    return {"views": panels}


# -- F13: causal tracing ------------------------------------------------------------------------
PATCH_COLOURS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}


def patching_views(panels: list[tuple[str, str, str, pd.DataFrame]]) -> dict:
    """F13: one heatmap per (prompt, state kind) with the value (and std) of every cell.
    ``panels``: (title, prompt id, kind, rows of the table) as the static figure draws them."""
    views = []
    for title, _, kind, sel in panels:
        grid = sel.pivot(index="position", columns="layer", values="value").sort_index()
        std = (
            sel.pivot(index="position", columns="layer", values="value_std").sort_index()
            if "value_std" in sel.columns
            else None
        )
        tokens = sel.drop_duplicates("position").set_index("position")["token"]
        hover = [
            [
                f"<b>layer {int(layer) + 1}</b> (block {int(layer)}), position {int(pos)} "
                f"{esc(repr(str(tokens[pos])))}<br>value {grid.loc[pos, layer]:.4g}"
                + (f" ± {std.loc[pos, layer]:.3g} (std)" if std is not None else "")
                for layer in grid.columns
            ]
            for pos in grid.index
        ]
        first = sel.iloc[0]
        lo = float(first["corrupt_value"])
        hi = max(float(first["clean_value"]), float(np.nanmax(grid.to_numpy())))
        views.append(
            heatmap(
                grid.to_numpy(),
                xticks=[str(int(c) + 1) for c in grid.columns],
                yticks=[f"{p} {visible(str(tokens[p]))}" for p in grid.index],
                hover=hover,
                title=title,
                colorbar=str(first["metric"]),
                colorscale=PATCH_COLOURS.get(kind, "Purples"),
                zrange=(lo, hi if hi > lo else lo + 1e-6),
                xtitle="layer l (restored state of block l-1)",
                ytitle="input token (position)",
            )
        )
    return {"views": views}


# -- F7: tuned vs logit lens trajectories -------------------------------------------------------
def trajectory_view(traj, tokens: list[str], title: str, colour: str) -> dict[str, Any]:
    """A F7 trajectory (layers bottom-up as in the static figure) with the top-k per cell."""
    values = traj.prob if colour == "prob" else traj.entropy
    rows = list(range(len(traj.layers)))[::-1]  # last layer at the top
    hover, text = [], []
    for r in rows:
        hover_row, text_row = [], []
        for c, token in enumerate(tokens):
            lines = [
                f"<b>layer {traj.layers[r]}, position {c}</b> input {esc(repr(token))}",
                f"{'top-1 probability' if colour == 'prob' else 'entropy (nats)'}: "
                f"{values[r, c]:.3f}",
            ]
            if traj.topk is not None:
                lines.append(f"top-{len(traj.topk[r][c])} (probability):")
                lines += [
                    f"{k + 1}. {esc(repr(t))} {p:.3f}" for k, (t, p) in enumerate(traj.topk[r][c])
                ]
            hover_row.append("<br>".join(lines))
            text_row.append(visible(traj.top1[r][c]))
        hover.append(hover_row)
        text.append(text_row)
    last = traj.layers[-1]
    return heatmap(
        values[rows],
        xticks=[f"{i} {visible(t)}" for i, t in enumerate(tokens)],
        yticks=[layer_label(traj.layers[r], last) for r in rows],
        hover=hover,
        text=text,
        title=title,
        colorbar="probability" if colour == "prob" else "entropy, nats",
        colorscale="Viridis",
        zrange=(0.0, 1.0) if colour == "prob" else None,
    )


# -- F15: visibility of every cell --------------------------------------------------------------
def visibility_view(table: pd.DataFrame, query: tuple[int, int], title: str) -> dict[str, Any]:
    """The whole influence tensor ``V[l, t, l', t']`` (flat, row-major) and the tokens; the
    report's script draws the map of the hovered query cell (seed 003)."""
    n_states = int(table["query_layer"].max()) + 1
    n_pos = int(table["query_pos"].max()) + 1
    order = table.sort_values(["query_layer", "query_pos", "layer", "position"])
    dense = np.zeros((n_states, n_pos, n_states, n_pos))
    dense[
        order["query_layer"].to_numpy(),
        order["query_pos"].to_numpy(),
        order["layer"].to_numpy(),
        order["position"].to_numpy(),
    ] = order["value"].to_numpy()
    tokens = table.drop_duplicates("position").sort_values("position")["token"].tolist()
    positive = dense[dense > 0]
    return {
        "kind": "visibility",
        "title": title,
        "shape": [n_states, n_pos],
        "values": [num(v, 3) for v in dense.reshape(-1)],
        "tokens": [visible(str(t)) for t in tokens],
        "range": [num(math.log10(positive.min())), num(math.log10(positive.max()))]
        if positive.size
        else [0, 1],
        "query": [int(query[0]), int(query[1])],
    }
