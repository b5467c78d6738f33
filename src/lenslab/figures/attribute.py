"""F9: attribute lens (Hernandez et al. 2024): LRE faithfulness per layer and relation, and the
lens applied at every (layer, position) of one text."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lenslab.figures.axes import thin_labels  # noqa: E402
from lenslab.figures.tables import clip  # noqa: E402


def plot_attribute(
    summary: pd.DataFrame, view: pd.DataFrame, model: str, betas: dict[str, float],
    view_relation: str, n_train: int,
) -> tuple[Figure, str]:  # fmt: skip
    layers = sorted(view["layer"].unique())
    positions = sorted(view["position"].unique())
    fig, axes = plt.subplots(
        # a row of cell text per layer: 30-50 layers need the height
        1, 2, figsize=(7 + 0.75 * len(positions), max(4.2, 1.0 + 0.17 * len(layers))),
        gridspec_kw={"width_ratios": [6, max(4, 0.75 * len(positions))]},
    )  # fmt: skip
    ax = axes[0]
    for rel, g in summary.groupby("relation", sort=True):
        ax.plot(g["layer"], g["recall"], "o-", label=f"{rel} (beta={betas.get(rel, 1.0):g})")
        ax.fill_between(g["layer"], g["ci_low"], g["ci_high"], alpha=0.15)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer k of h = resid[k] at the last subject token (0 = embeddings)")
    ax.set_ylabel("faithfulness (recall@1 of the object)")
    ax.legend(fontsize=8)
    grid = view.pivot(index="layer", columns="position", values="prob").loc[layers[::-1]]
    text = view.pivot(index="layer", columns="position", values="top1").loc[layers[::-1]]
    ax2 = axes[1]
    ax2.imshow(grid.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax2.text(j, i, clip(str(text.iat[i, j]), 9), ha="center", va="center", fontsize=6.5)
    tokens = view.drop_duplicates("position").set_index("position")["token"].loc[positions]
    ax2.set_xticks(range(len(positions)), [clip(t, 9) for t in tokens], rotation=60, fontsize=7)
    ax2.set_yticks(*thin_labels(layers[::-1]))
    ax2.set_ylabel("layer k")
    ax2.set_title(f"attribute lens ({view_relation}): top-1 per (layer, position)", fontsize=9)
    fig.tight_layout()
    scored = summary.dropna(subset=["recall"])  # NaN: no prompt answered correctly
    best = scored.loc[scored.groupby("relation")["recall"].idxmax()] if len(scored) else scored
    n_correct = summary.groupby("relation")["n_correct"].max()
    caption = (
        f"Attribute lens on {model}. Left: faithfulness of the linear relational embedding "
        f"LRE(h) = beta W h + b per relation and layer k, estimated from the first {n_train} "
        "prompts of each relation (W = mean Jacobian of the last block's output at the last "
        "token, resid[L] before the final norm, with respect to h = resid[k] at the last "
        "subject token; b = mean of z - W_i h), decoded with the final norm and unembedding; "
        "recall@1 of the object on the held-out prompts the model itself answers correctly "
        "(95% Wilson interval). Best layer: "
        + "; ".join(
            f"{r.relation} {r.recall:.2f} at k = {int(r.layer)} (n = {int(n_correct[r.relation])})"
            for r in best.itertuples()
        )
        + f". Right: the {view_relation} LRE of each layer applied to every position of a text; "
        "cell text is its top-1 token, colour its probability."
    )
    if np.isnan(summary["recall"]).all():
        caption += " No prompt was answered correctly by the model, so no faithfulness is shown."
    return fig, caption
