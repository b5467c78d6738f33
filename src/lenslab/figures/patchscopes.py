"""F11 token-identity patchscope vs lenses (per layer, and across layers); F12 entity
resolution by layer (the table of Ghandeharioun et al. 2024, in the model's own world)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lenslab.figures.axes import thin_labels  # noqa: E402
from lenslab.figures.tables import clip, text_table  # noqa: E402
from lenslab.lenses.catalog import lens_caption  # noqa: E402
from lenslab.stats.aggregate import wilson  # noqa: E402

RESOLVED, UNRESOLVED = "#cdeccd", "#ffffff"


def identity_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Per (method, layer) with l* = l: precision@1 with a 95% Wilson interval, mean surprisal."""
    diag = table[table["layer"] == table["target_layer"]]
    rows = []
    for (method, layer), g in diag.groupby(["method", "layer"], sort=True):
        k, n = int(g["correct"].sum()), len(g)
        lo, hi = wilson(k, n)
        rows.append((method, layer, k / n, lo, hi, float(g["surprisal"].mean()), n))
    return pd.DataFrame(
        rows, columns=["method", "layer", "precision", "ci_low", "ci_high", "surprisal", "n"]
    )


def cross_layer_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Patchscope precision@1 per (source layer l, target layer l*), on the states that were
    patched across layers (``cross_layer_step``); one column when there are none."""
    ps = table[table["method"] == "patchscope"]
    grid = set(ps.loc[ps["layer"] != ps["target_layer"], "layer"])
    if grid:
        ps = ps[ps["layer"].isin(grid) & ps["target_layer"].isin(grid)]
    return ps.pivot_table(index="layer", columns="target_layer", values="correct", aggfunc="mean")


def plot_token_identity(table: pd.DataFrame, model: str, target: str) -> tuple[Figure, str]:
    curves = identity_curves(table)
    grid = cross_layer_grid(table)
    cross = grid.shape[1] > 1
    fig, axes = plt.subplots(1, 3 if cross else 2, figsize=(15 if cross else 10, 4))
    for method, g in curves.groupby("method", sort=False):
        label = "patchscope (token identity)" if method == "patchscope" else f"{method} lens"
        axes[0].plot(g["layer"], g["precision"], "o-", label=label)
        axes[0].fill_between(g["layer"], g["ci_low"], g["ci_high"], alpha=0.2)
        axes[1].plot(g["layer"], g["surprisal"], "o-", label=label)
    axes[0].set_ylim(0, 1.02)
    axes[0].set_ylabel("precision@1 vs the source's next-token top-1")
    axes[1].set_ylabel("surprisal of the source's top-1 (nats)")
    for ax in axes[:2]:
        ax.set_xlabel("source layer l (0 = embeddings)")
        ax.legend(fontsize=8)
    if cross:
        im = axes[2].imshow(grid.to_numpy(), origin="lower", vmin=0, vmax=1, cmap="viridis")
        axes[2].set_xticks(*thin_labels(grid.columns.tolist()))
        axes[2].set_yticks(*thin_labels(grid.index.tolist()))
        axes[2].set_xlabel("target layer l*")
        axes[2].set_ylabel("source layer l")
        axes[2].set_title("patchscope precision@1 across layers", fontsize=9)
        fig.colorbar(im, ax=axes[2])
    fig.tight_layout()
    p = curves.pivot_table(index="layer", columns="method", values="precision")
    n_cells = int(curves["n"].max())
    lens_names = [m for m in p.columns if m != "patchscope"]
    comparison = "; ".join(
        f"patchscope above the {m} lens at layers "
        + (", ".join(str(int(x)) for x in p.index[p["patchscope"] > p[m]]) or "none")
        for m in lens_names
    )
    caption = (
        f"Token-identity patchscope on {model}: the state resid[l] at every position i of the "
        f"source prompts (l = 0 is the embeddings, l = L the state before the final norm) is "
        f"written over the same layer l* = l at the last position of the target prompt "
        f"{target!r}, and the patched next-token top-1 is compared with the source model's own "
        f"next-token top-1 at i (precision@1, 95% Wilson interval; {n_cells} cells per layer). "
        "Surprisal: -ln p of the source's top-1 under each reading, in nats. Lenses: "
        + "; ".join(lens_caption(m) for m in lens_names)
        + f". {comparison}."
        + (
            " Right: the patchscope with source layer l written into target layer l* "
            f"(cross-layer patching, states {_states_text(grid.index.tolist())})."
            if cross
            else ""
        )
    )
    return fig, caption


def _states_text(layers: list[int]) -> str:
    steps = {b - a for a, b in zip(layers, layers[1:], strict=False)}
    return (
        ", ".join(map(str, layers))
        if len(steps) > 1 or len(layers) < 4
        else (f"{layers[0]} to {layers[-1]} every {steps.pop()}")
    )


def plot_entities(table: pd.DataFrame, model: str, target: str) -> tuple[Figure, str]:
    sources = list(dict.fromkeys(table["source_id"]))
    layers = sorted(table["layer"].unique())
    idx = table.set_index(["layer", "source_id"])
    cells, colours = [], []
    for layer in layers[::-1]:
        row = idx.loc[layer]
        cells.append([clip(row.loc[s, "generation"]) for s in sources])
        colours.append([RESOLVED if row.loc[s, "resolved"] else UNRESOLVED for s in sources])
    heads = [
        clip(f"{table.loc[table['source_id'] == s, 'source'].iloc[0]} -> "
             f"{table.loc[table['source_id'] == s, 'answer'].iloc[0]}", 30)
        for s in sources
    ]  # fmt: skip
    fig = text_table(cells, [f"l = {x}" for x in layers[::-1]], heads, colours)
    resolved = table.groupby("source_id")["resolved"].any()
    first = table[table["resolved"]].groupby("source_id")["layer"].min()
    caption = (
        f"Entity resolution by patchscope on {model} (as Ghandeharioun et al.'s 'Diana, Princess "
        f"of Wales' table): the state resid[l] at the last token of each source (column: "
        f"source -> the entity its description should name) is written over the last position "
        f"of the target {target!r} at the same layer l* = l, and the model generates greedily "
        "(shown up to the first ',' or '.'). Green: the generation names the expected entity. "
        f"Resolved at some layer: {int(resolved.sum())} of {len(resolved)} sources"
        + (
            f" (first layer: median {float(np.median(first.to_numpy())):.0f})."
            if len(first)
            else "."
        )
    )
    return fig, caption
