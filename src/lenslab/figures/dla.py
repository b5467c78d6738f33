"""F10: direct logit attribution of the logit difference (answer minus a counterfactual)."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

BLOCK_KINDS = ("embed", "attn", "mlp", "bias")
UNIT = "logits (difference of two logits)"


def layer_names(ld: pd.DataFrame) -> pd.DataFrame:
    """Component names in the one layer numbering: the table's ``layer`` is the block index b,
    whose sublayers belong to layer b+1 (they write into resid[b+1]): 'attn 0' -> 'attn 1',
    'L0H3' -> 'L1H3'."""
    numbered = ld["kind"].isin(["attn", "mlp", "head", "attn_bias"])
    names = [
        re.sub(r"\d+", str(int(layer) + 1), comp, count=1) if keep else comp
        for comp, layer, keep in zip(ld["component"], ld["layer"], numbered, strict=True)
    ]
    return ld.assign(component=names, layer=np.where(numbered, ld["layer"] + 1, ld["layer"]))


def logit_differences(table: pd.DataFrame) -> pd.DataFrame:
    """Per (prompt, component): the answer's term minus the first other tracked token's term.
    Prompts that track no other token are left out."""
    rows = []
    for pid, g in table.groupby("prompt_id", sort=False):
        answer = g["answer"].iloc[0]
        others = [t for t in dict.fromkeys(g["token"]) if t != answer]
        if not others:
            continue
        a = g[g["token"] == answer].set_index(["component", "kind", "layer", "head"])["value"]
        b = g[g["token"] == others[0]].set_index(["component", "kind", "layer", "head"])["value"]
        ld = (a - b).rename("ld").reset_index()
        rows.append(ld.assign(prompt_id=pid, answer=answer, counterfactual=others[0]))
    if not rows:
        raise ValueError("no prompt tracks a counterfactual token: give prompts `targets`")
    return pd.concat(rows, ignore_index=True)


def plot_dla(table: pd.DataFrame, model: str) -> tuple[Figure, str]:
    """Bars: mean direct contribution of each block component to the logit difference, with
    each prompt as a dot; heatmap: mean contribution of each attention head."""
    ld = layer_names(logit_differences(table))
    blocks = ld[ld["kind"].isin(BLOCK_KINDS)]
    order = list(dict.fromkeys(blocks["component"]))
    per_prompt = blocks.pivot_table(index="prompt_id", columns="component", values="ld")[order]
    heads = ld[ld["kind"] == "head"]
    fig, axes = plt.subplots(
        1, 2 if len(heads) else 1, figsize=(13 if len(heads) else 8, 4.2), squeeze=False
    )
    ax = axes[0, 0]
    x = np.arange(len(order))
    colors = [
        "#888888" if c in ("embed", "bias") else "#1f77b4" if "attn" in c else "#ff7f0e"
        for c in order
    ]
    ax.bar(x, per_prompt.mean().to_numpy(), color=colors)
    for _, row in per_prompt.iterrows():
        ax.plot(x, row.to_numpy(), "k.", ms=3, alpha=0.5)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(x, order, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"direct effect on logit difference,\n{UNIT}")
    ax.set_title("per component (blue: attention, orange: MLP)")
    if len(heads):
        grid = heads.pivot_table(index="layer", columns="head", values="ld", aggfunc="mean")
        lim = float(np.abs(grid.to_numpy()).max()) or 1.0
        im = axes[0, 1].imshow(grid.to_numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        axes[0, 1].set_xticks(range(grid.shape[1]), grid.columns.tolist())
        axes[0, 1].set_yticks(range(grid.shape[0]), grid.index.tolist())
        axes[0, 1].set_xlabel("head")
        axes[0, 1].set_ylabel("layer l (heads of block l-1)")
        axes[0, 1].set_title("per attention head (mean over prompts)")
        fig.colorbar(im, ax=axes[0, 1], label=f"direct effect, {UNIT}")
    total = per_prompt.sum(axis=1)
    top = per_prompt.mean().abs().sort_values(ascending=False).index[:3].tolist()
    caption = (
        f"Direct logit attribution on {model}, {len(per_prompt)} prompts: each component's "
        "direct contribution to the logit of the answer minus that of a counterfactual token, "
        "through the final norm with its scale frozen at the real forward pass. The terms add "
        f"up to the model's logit difference (checked); mean total {total.mean():.2f} logits. "
        f"Largest mean terms: {', '.join(top)}. Values are in logits (a logit difference of d "
        "is a factor e^d in the odds of answer over counterfactual). Component names use the "
        "layer numbering ('attn 1' and 'L1H0' are block 0's); the table's `layer` column is "
        "the block index."
    )
    fig.tight_layout()
    return fig, caption
