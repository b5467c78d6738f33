"""F13 figures: causal-tracing heatmaps (layer x position) and token-category curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lenslab.errors import LensLabError  # noqa: E402
from lenslab.figures.axes import thin_ticks  # noqa: E402
from lenslab.patching.metrics import CATEGORIES, METRICS, category_means  # noqa: E402

KIND_ORDER = ("resid", "mlp", "attn")  # ROME's panel order
KIND_NAME = {"resid": "block output (residual)", "mlp": "MLP output", "attn": "attention output"}
KIND_CMAP = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
METRIC_NAME = {
    "prob": "p(clean answer)",
    "logit_diff": "logit difference (clean - corrupt answer)",
    "norm_ld": "normalised logit difference (0 = corrupt, 1 = clean)",
}


def _check(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in METRICS:
        raise LensLabError(f"unknown patching metric {metric!r}", fix=f"use one of {METRICS}")
    if table.empty:
        raise LensLabError("the patching table is empty", fix="rerun the patching rule")
    return table[table["metric"] == metric]


def _window(table: pd.DataFrame, window: int | None) -> int:
    """The attn/MLP window shown: the given one, else the widest in the table."""
    windows = sorted(table.loc[table["kind"] != "resid", "window"].unique())
    if window is None:
        return int(windows[-1]) if windows else 1
    if windows and window not in windows:
        raise LensLabError(f"window {window} is not in the table", fix=f"use one of {windows}")
    return int(window)


def _label(row: pd.Series) -> str:
    """Token text ('·' = space); clean/corrupt where a pair differs; '*' marks the subject."""
    text = row["token"].replace(" ", "·")
    if row["corrupt_token"] != row["token"] and row["mode"] == "pairs":
        text += "/" + row["corrupt_token"].replace(" ", "·")
    return text + ("*" if row["is_subject"] else "")


def _conventions(table: pd.DataFrame, window: int) -> str:
    mode = table["mode"].iloc[0]
    if mode == "pairs":
        pairs = ", ".join(
            sorted(
                {
                    f"{a} vs {b}"
                    for a, b in zip(table["prompt_id"], table["corrupt_id"], strict=True)
                }
            )
        )
        corruption = (
            f"Corruption: clean/corrupt prompt pairs of equal token length ({pairs}); the corrupt "
            "answer is the corrupt prompt's answer"
        )
    else:
        n = int(table["n_samples"].iloc[0])
        corruption = (
            f"Corruption (ROME): Gaussian noise with std 3x the std of the input embedding "
            f"matrix added to the subject tokens' embeddings, {n} seeded samples, scores "
            "averaged over samples; the corrupt answer is the noisy runs' top-1 token other "
            "than the clean answer (mean probability over samples)"
        )
    return (
        f"{corruption}. Restoring one clean state into the corrupted run: at layer l the block "
        "output resid[l] (output of block l-1); the attention or MLP output of a window of "
        f"{window} layers centred on layer l (l-{window // 2}..l+{(window - 1) // 2}, clipped at "
        "layers 1 and L; ROME restores 10 of GPT-2 XL's 48 layers, scaled here to the model's "
        "depth). The table's `layer` column is the block index l-1. Runner: "
        f"{', '.join(sorted(table['runner'].unique()))}."
    )


def heatmap_panels(
    table: pd.DataFrame,
    metric: str = "norm_ld",
    window: int | None = None,
    prompt_ids: list[str] | None = None,
    max_prompts: int = 2,
) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(title, prompt id, state kind, rows) of every F13 heatmap, row by row."""
    table = _check(table, metric)
    window = _window(table, window)
    ids = prompt_ids or list(dict.fromkeys(table["prompt_id"]))[:max_prompts]
    kinds = [k for k in KIND_ORDER if k in set(table["kind"])]
    panels = []
    for pid in ids:
        rows = table[table["prompt_id"] == pid]
        if rows.empty:
            raise LensLabError(f"prompt {pid!r} is not in the table", fix="pick a patched prompt")
        for kind in kinds:
            width = 1 if kind == "resid" else window
            sel = rows[(rows["kind"] == kind) & (rows["window"] == width)]
            win = "" if kind == "resid" else f", window {window}"
            panels.append((f"{pid}: {KIND_NAME[kind]}{win}", pid, kind, sel))
    return panels


def plot_heatmaps(
    table: pd.DataFrame,
    metric: str = "norm_ld",
    window: int | None = None,
    prompt_ids: list[str] | None = None,
    max_prompts: int = 2,
    model: str = "",
) -> tuple[Figure, str]:
    """One row of three heatmaps (residual, MLP, attention) per prompt; and the caption."""
    panels = heatmap_panels(table, metric, window, prompt_ids, max_prompts)
    table = _check(table, metric)
    window = _window(table, window)
    ids = list(dict.fromkeys(p for _, p, _, _ in panels))
    kinds = list(dict.fromkeys(k for _, _, k, _ in panels))
    n_tok = [int(table.loc[table["prompt_id"] == p, "position"].max()) + 1 for p in ids]
    fig, axes = plt.subplots(
        len(ids),
        len(kinds),
        figsize=(4.2 * len(kinds), sum(0.32 * t + 1.2 for t in n_tok)),
        squeeze=False,
        gridspec_kw={"height_ratios": n_tok},
    )
    for i, (_, _, kind, sel) in enumerate(panels):
        _heatmap(axes[i // len(kinds), i % len(kinds)], sel, kind, metric, window)
    fig.tight_layout()
    caption = (
        f"Causal tracing of model {model}: {METRIC_NAME[metric]} of the corrupted run with one "
        "clean state restored, per layer (x) and token position (y; '*' marks subject tokens, "
        "clean/corrupt where a pair differs). Colour scale starts at the unpatched corrupt score "
        "(white) of each prompt and ends at the larger of the clean score and the largest patched "
        f"score. {_conventions(table, window)} Values (mean over noise samples, with their std) "
        "are in the patching table."
    )
    return fig, caption


def _heatmap(ax, sel: pd.DataFrame, kind: str, metric: str, window: int) -> None:
    grid = sel.pivot(index="position", columns="layer", values="value").sort_index()
    labels = sel.drop_duplicates("position").sort_values("position").apply(_label, axis=1)
    first = sel.iloc[0]
    low = float(first["corrupt_value"])
    high = max(float(first["clean_value"]), float(np.nanmax(grid.to_numpy())))
    im = ax.imshow(grid.to_numpy(), cmap=KIND_CMAP[kind], vmin=low, vmax=high, aspect="auto")
    ax.set_yticks(range(len(labels)), labels=list(labels), fontsize=8)
    # One layer numbering: block index b restores a state of layer b+1 (resid[b+1]).
    cols = list(grid.columns)
    shown = thin_ticks(len(cols))  # 30-50 layers: every label would overlap its neighbours
    ax.set_xticks(shown, labels=[str(cols[i] + 1) for i in shown], fontsize=7)
    ax.set_xlabel("layer l = resid[l]")
    win = "" if kind == "resid" else f", window {window}"
    ax.set_title(f"{first['prompt_id']}: {KIND_NAME[kind]}{win}", fontsize=9)
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.05)
    bar.ax.tick_params(labelsize=7)
    bar.set_label(
        f"{metric} (clean {float(first['clean_value']):.3g}, corrupt {low:.3g})", fontsize=7
    )


def plot_categories(
    table: pd.DataFrame, metric: str = "norm_ld", window: int | None = None, model: str = ""
) -> tuple[Figure, str]:
    """Mean effect per token category and layer, one panel per state kind, 95 % CI bands."""
    table = _check(table, metric)
    window = _window(table, window)
    kinds = [k for k in KIND_ORDER if k in set(table["kind"])]
    keep = (table["kind"] == "resid") | (table["window"] == window)
    means = category_means(table[keep])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.4 * len(kinds), 3.6), squeeze=False)
    colours = dict(zip(CATEGORIES, plt.get_cmap("tab10").colors, strict=False))
    n_prompts = table["prompt_id"].nunique()
    for ax, kind in zip(axes[0], kinds, strict=True):
        for cat in CATEGORIES:
            sel = means[(means["kind"] == kind) & (means["category"] == cat)]
            if sel.empty:
                continue
            layer = sel["layer"] + 1  # block index b -> layer b+1 (resid[b+1])
            ax.plot(layer, sel["mean"], marker=".", color=colours[cat], label=cat)
            ax.fill_between(layer, sel["ci_low"], sel["ci_high"], color=colours[cat], alpha=0.15)
        if metric == "norm_ld":
            for y in (0.0, 1.0):
                ax.axhline(y, color="grey", lw=0.8, ls="--")
        win = "" if kind == "resid" else f", window {window}"
        ax.set_title(f"{KIND_NAME[kind]}{win}", fontsize=9)
        ax.set_xlabel("layer l = resid[l]")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    caption = (
        f"Average causal effect by token category for model {model}: {METRIC_NAME[metric]} "
        f"after restoring one clean state, per layer. Each prompt contributes the mean over its "
        f"positions in a category (ROME's categories: first/middle/last subject token, first "
        f"token after the subject, further tokens, last token; a one-token subject counts as "
        f"first and last); lines are the mean over {n_prompts} prompt(s), bands the 95 % "
        "Student-t confidence interval over prompts (none for a single prompt)"
        + (", dashed lines the corrupt (0) and clean (1) scores. " if metric == "norm_ld" else ". ")
        + _conventions(table, window)
    )
    return fig, caption
