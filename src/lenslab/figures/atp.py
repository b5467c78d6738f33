"""F13c: attribution patching against exact patching (scatter per node kind, head maps)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lenslab.errors import LensLabError  # noqa: E402
from lenslab.options import AtpFigureOptions  # noqa: E402

KIND_NAMES = {"head": "attention heads", "mlp": "MLP outputs", "resid": "residual stream"}


def _stat(summary: pd.DataFrame, kind: str, method: str, col: str) -> float:
    row = summary[(summary["kind"] == kind) & (summary["method"] == method)]
    return float(row[col].iloc[0]) if len(row) else float("nan")


def error_text(summary: pd.DataFrame) -> str:
    """One sentence per kind with the measured error (caption and findings)."""
    parts = []
    for kind in [k for k in KIND_NAMES if k in set(summary["kind"])]:
        s = lambda m, c, kind=kind: _stat(summary, kind, m, c)  # noqa: E731
        n = int(s("atp", "n"))
        every = bool(summary[summary["kind"] == kind]["complete"].all())
        parts.append(
            f"{KIND_NAMES[kind]} ({n} nodes{', all' if every else ' verified'}): AtP Spearman "
            f"{s('atp', 'spearman'):.3f}, Pearson {s('atp', 'pearson'):.3f}, top-"
            f"{int(s('atp', 'k'))} recall {s('atp', 'recall_at_k'):.2f}, largest error "
            f"{s('atp', 'max_abs_error'):.3f}; AtP* against |exact| Spearman "
            f"{s('atp_star', 'spearman'):.3f}, recall {s('atp_star', 'recall_at_k'):.2f}"
        )
    return "; ".join(parts) + "."


def _pick_prompt(nodes: pd.DataFrame, prompt: str | None) -> str:
    heads = nodes[(nodes["kind"] == "head") & nodes["verified"]]
    if prompt is not None:
        if prompt not in set(nodes["prompt_id"]):
            raise LensLabError(
                f"F13c option prompt={prompt!r} is not a prompt of the table",
                fix=f"use one of {sorted(set(nodes['prompt_id']))}",
            )
        return prompt
    size = heads.groupby("prompt_id", sort=True)["exact_norm"].apply(lambda v: v.abs().max())
    return str(size.idxmax())


def plot_atp(
    nodes: pd.DataFrame, summary: pd.DataFrame, misses: pd.DataFrame, options: AtpFigureOptions
) -> tuple[Figure, str]:
    """Scatter of estimate vs exact per kind (top), the head x position maps of one prompt
    (bottom: estimate, exact, difference); returns the figure and its caption."""
    kinds = [k for k in KIND_NAMES if k in set(nodes["kind"])]
    has_heads = "head" in kinds
    cols = 3 if has_heads else max(len(kinds), 1)
    fig = plt.figure(figsize=(4.2 * cols, 7.6 if has_heads else 3.8))
    grid = fig.add_gridspec(2 if has_heads else 1, cols)
    checked = nodes[nodes["verified"] & np.isfinite(nodes["exact_norm"])]
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(grid[0, i])
        rows = checked[checked["kind"] == kind]
        ax.scatter(rows["exact_norm"], rows["atp_norm"], s=7, alpha=0.6, label="AtP vs exact")
        ax.scatter(
            rows["exact_norm"].abs(), rows["atp_star_norm"], s=7, alpha=0.5, marker="x",
            label="AtP* vs |exact|",
        )  # fmt: skip
        lo = float(np.nanmin([rows["exact_norm"].min(), rows["atp_norm"].min(), 0]))
        hi = float(np.nanmax([rows["exact_norm"].abs().max(), rows["atp_norm"].max(), 0]))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_title(
            f"{KIND_NAMES[kind]}: Spearman AtP {_stat(summary, kind, 'atp', 'spearman'):.2f}, "
            f"AtP* {_stat(summary, kind, 'atp_star', 'spearman'):.2f}",
            fontsize=8,
        )
        ax.set_xlabel("exact patching (normalised LD)", fontsize=8)
        ax.set_ylabel("estimate", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    prompt = None
    if has_heads:
        prompt = _pick_prompt(nodes, options.prompt)
        _head_maps(fig, grid, nodes[(nodes["prompt_id"] == prompt) & (nodes["kind"] == "head")],
                   options.method)  # fmt: skip
    fig.tight_layout()
    return fig, _caption(summary, misses, prompt, options.method)


def _head_maps(fig: Figure, grid, rows: pd.DataFrame, method: str) -> None:
    """(block, head) x position maps of the estimate and of exact patching, one colour scale."""
    rows = rows.sort_values(["layer", "head", "position"])
    labels = [f"{lay}.{h}" for lay, h in rows[["layer", "head"]].drop_duplicates().to_numpy()]
    positions = sorted(rows["position"].unique())
    tokens = rows.drop_duplicates("position").set_index("position")["token"]
    shape = (len(labels), len(positions))
    maps = {
        "estimate": rows[f"{method}_norm"].to_numpy().reshape(shape),
        "exact": rows["exact_norm"].to_numpy().reshape(shape),
    }
    if method == "atp_star":
        maps["exact"] = np.abs(maps["exact"])
    maps["estimate - exact"] = maps["estimate"] - maps["exact"]
    vmax = float(np.nanmax(np.abs(np.concatenate([m.ravel() for m in maps.values()])))) or 1.0
    for i, (name, values) in enumerate(maps.items()):
        ax = fig.add_subplot(grid[1, i])
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        est = {"atp": "AtP", "atp_star": "AtP*"}[method]
        what = name.replace("estimate", est)
        prompt = rows["prompt_id"].iloc[0]
        ax.set_title(f"{what}, heads x positions (prompt {prompt})", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=5)
        ax.set_xticks(range(len(positions)), [repr(tokens[p]) for p in positions], fontsize=6,
                      rotation=60)  # fmt: skip
        ax.set_ylabel("block.head", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.8)


def _caption(summary: pd.DataFrame, misses: pd.DataFrame, prompt: str | None, method: str) -> str:
    top = misses[misses["method"] == "atp"].head(3)
    named = ", ".join(
        f"{r.kind} block {r.layer}{'' if r.head < 0 else f' head {r.head}'} at {r.token!r} "
        f"({r.prompt_id}: exact {r.exact_norm:.3f}, AtP {r.estimate:.3f})"
        for r in top.itertuples()
    )
    return (
        "Attribution patching (AtP: (clean - corrupt) . gradient on the corrupted run; AtP*: "
        "GradDrop magnitude) against exact patching of the same nodes, restoring clean into "
        "corrupt; values are the change in logit difference normalised by LD_clean - "
        f"LD_corrupt. Measured error: {error_text(summary)} "
        + (f"Largest AtP false negatives: {named}. " if named else "")
        + (
            f"Bottom: heads x positions of prompt {prompt} ({method}, exact, their difference). "
            if prompt
            else ""
        )
        + "Blocks are 0-based; positions before the first corrupted token are left out (every "
        "effect there is 0)."
    )
