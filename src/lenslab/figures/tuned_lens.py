"""F7 (tuned lens vs logit lens) and F8 (representational drift) figures."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lenslab.figures.axes import thin_labels
from lenslab.options import F7Options, parse_options

if TYPE_CHECKING:  # torch only for trajectory(): the F8 job draws from a table
    from torch import Tensor

    from lenslab.lenses.base import Lens

LENS_COLOURS = {"logit": "tab:blue", "tuned": "tab:orange", "jacobian": "tab:green"}


def f7_options(options: dict | None) -> dict:
    """Study options of F7 with their defaults (:class:`lenslab.options.F7Options`)."""
    return asdict(parse_options(F7Options, options))


@dataclass
class Trajectory:
    """A lens's prediction at every (layer, position) of one prompt."""

    layers: list[int]
    top1: list[list[str]]  # [layer][position] decoded top-1 token
    prob: np.ndarray  # [layers, T] probability of the top-1 token
    entropy: np.ndarray  # [layers, T] entropy of the lens distribution, nats
    topk: list[list[list[tuple[str, float]]]] | None = None  # [layer][position] (token, prob)


def trajectory(lens: Lens, resid: Tensor, tokenizer, layers: list[int], k: int = 5) -> Trajectory:
    """Top-1 token, its probability, the entropy and the top-``k`` (token, probability) for
    ``resid`` ``[L+1, T, D]``."""
    import torch

    top1, prob, entropy, topk = [], [], [], []
    with torch.no_grad():
        for layer in layers:
            logq = torch.log_softmax(lens.logits(resid[layer], layer).float(), -1)
            p_max, idx = logq.exp().max(-1)
            top1.append([token_text(tokenizer, i) for i in idx.tolist()])
            prob.append(p_max.cpu().numpy())
            entropy.append((-(logq.exp() * logq).sum(-1)).cpu().numpy())
            p_k, i_k = logq.exp().topk(min(k, logq.shape[-1]), dim=-1)
            topk.append(
                [
                    [
                        (token_text(tokenizer, int(i)), float(p))
                        for i, p in zip(ids, ps, strict=True)
                    ]
                    for ids, ps in zip(i_k.tolist(), p_k.tolist(), strict=True)
                ]
            )
    return Trajectory(layers, top1, np.stack(prob), np.stack(entropy), topk)


def token_text(tokenizer, token_id: int) -> str:
    """Decoded text of one token; its vocabulary entry when that decodes to nothing visible."""
    text = tokenizer.decode([token_id])
    return text if text.strip() else str(tokenizer.convert_ids_to_tokens(token_id))


def shown_layers(n_layers: int, max_rows: int = 25) -> list[int]:
    """Every layer when they fit, else every k-th; the last state is always shown."""
    step = max(1, math.ceil((n_layers + 1) / max_rows))
    layers = list(range(0, n_layers + 1, step))
    return layers if layers[-1] == n_layers else [*layers, n_layers]


def _label(text: str, width: int = 8) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def _trajectory_panel(ax, traj: Trajectory, tokens: list[str], colour: str, title: str):
    values = traj.prob if colour == "prob" else traj.entropy
    cmap, vmin, vmax = ("viridis", 0.0, 1.0) if colour == "prob" else ("magma_r", 0.0, None)
    image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
    n_rows, n_cols = values.shape
    font = 7 if n_cols <= 14 else 5
    for r in range(n_rows):
        for c in range(n_cols):
            bright = image.norm(values[r, c]) > 0.6
            # viridis is light at the top, magma_r light at the bottom: pick the readable ink
            dark = bright if colour == "prob" else not bright
            ax.text(
                c,
                r,
                _label(traj.top1[r][c]),
                ha="center",
                va="center",
                fontsize=font,
                color="black" if dark else "white",
            )
    ax.set_xticks(range(n_cols), [_label(t) for t in tokens], rotation=60, fontsize=7)
    ax.set_yticks(range(n_rows), [str(layer) for layer in traj.layers], fontsize=7)
    ax.set_xlabel("input token (the prediction is for the next one)")
    ax.set_ylabel("layer l = resid[l] (0 = embeddings)")
    ax.set_title(title, fontsize=9)
    return image


def _curve_panel(ax, df: pd.DataFrame, metric: str, unit: str, ylabel: str) -> None:
    sub = df[(df.metric == metric) & (df.unit == unit)]
    last = int(sub.layer.max())
    if metric == "kl":  # zero at the last layer by construction: off a log axis
        sub = sub[sub.layer < last]
    for lens, part in sub.groupby("lens", sort=True):
        part = part.sort_values("layer")
        colour = LENS_COLOURS.get(str(lens))
        ax.plot(part.layer, part.value, marker="o", ms=3, label=f"{lens} lens", color=colour)
        ax.fill_between(part.layer, part.ci_low, part.ci_high, alpha=0.25, color=colour)
    if metric == "ce":
        final = sub[sub.layer == last].value.iloc[0]
        ax.axhline(final, color="grey", lw=0.8, ls="--", label="model output")
    ax.set_xlabel("layer l = resid[l] (0 = embeddings)")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log" if metric == "kl" else "linear")
    ax.set_xlim(-0.3, last + 0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_f7(
    logit: Trajectory,
    tuned: Trajectory,
    tokens: list[str],
    metrics: pd.DataFrame,
    colour: str = "prob",
    unit: str = "bits_per_byte",
) -> Figure:
    """Trajectories side by side (top row), KL and CE per layer with CIs (bottom row)."""
    fig = plt.figure(figsize=(max(10.0, 1.1 * len(tokens) + 2), 9.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.5, 1], hspace=0.45, wspace=0.25)
    image = None
    for col, (traj, name) in enumerate(((logit, "logit lens"), (tuned, "tuned lens"))):
        ax = fig.add_subplot(grid[0, col])
        image = _trajectory_panel(ax, traj, tokens, colour, name)
    label = "top-1 probability" if colour == "prob" else "entropy (nats)"
    fig.colorbar(image, ax=fig.axes[:2], fraction=0.025, pad=0.02, label=label)
    unit_label = "bits per byte" if unit == "bits_per_byte" else "nats per token"
    _curve_panel(
        fig.add_subplot(grid[1, 0]),
        metrics,
        "kl",
        "nats_per_token",
        "KL(final || lens), nats per token",
    )
    _curve_panel(
        fig.add_subplot(grid[1, 1]), metrics, "ce", unit, f"next-token cross-entropy, {unit_label}"
    )
    return fig


def f7_caption(
    affine: bool, prompt_text: str, colour: str, unit: str, metrics: pd.DataFrame
) -> str:
    row = metrics.iloc[0]
    colour_text = (
        "colour = probability of that token (0 to 1)"
        if colour == "prob"
        else "colour = entropy of the lens distribution (nats)"
    )
    norm = "the full final norm (with its affine)" if affine else "the final norm without affine"
    unit_text = "bits per byte" if unit == "bits_per_byte" else "nats per token"
    return (
        f"Prediction trajectories of the logit lens (left) and the tuned lens (right) on "
        f'"{prompt_text}": cell text = top-1 token at (layer, position), {colour_text}; '
        f"layer 0 = embeddings, layer L = last block's output. Both lenses decode with {norm} "
        f"and the unembedding; the tuned lens first applies a learned affine translator per "
        f"layer (h + A h + b, identity at the last layer), trained to match the model's final "
        f"output: KL(final || lens) at the same position, summed over layers, on held-out text "
        f"separate from the evaluation text. Bottom: per-layer KL(final || lens) and next-token "
        f"cross-entropy on {int(row.n_windows)} held-out windows ({int(row.n_tokens)} tokens, "
        f"{int(row.n_bytes)} bytes); KL in nats per token, cross-entropy in {unit_text} (bytes = "
        "UTF-8 bytes of the predicted tokens, "
        f"end-of-text counted as one); KL from the exact softmax, no probability clipping; the "
        f"last layer's KL is 0 by construction and not drawn; dashed line = the model's own "
        f"cross-entropy; bands = {row.ci_level:.0%} bootstrap intervals over windows."
    )


def plot_f8(drift: pd.DataFrame) -> Figure:
    """Cosine and linear-CKA similarity of layers, and the layer-transfer KL matrix."""
    panels = [
        ("cosine", "mean cosine of centred states", "viridis", None),
        ("cka", "linear CKA of centred states", "viridis", None),
        ("transfer_kl", "KL(final || translator i on layer j), nats", "magma_r", "log"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    for ax, (kind, title, cmap, scale) in zip(axes, panels, strict=True):
        sub = drift[drift.kind == kind]
        n_rows, n_cols = int(sub.row.max()) + 1, int(sub.col.max()) + 1
        mat = np.full((n_rows, n_cols), np.nan)
        mat[sub.row.to_numpy(), sub.col.to_numpy()] = sub.value.to_numpy()
        if scale == "log":
            from matplotlib.colors import LogNorm

            positive = mat[mat > 0]
            norm = LogNorm(vmin=max(positive.min(), 1e-3), vmax=positive.max())
            image = ax.imshow(mat, cmap=cmap, norm=norm, origin="lower")
        else:
            image = ax.imshow(
                mat, cmap=cmap, vmin=min(0.0, np.nanmin(mat)), vmax=1.0, origin="lower"
            )
        if n_rows <= 14:
            for r in range(n_rows):
                for c in range(n_cols):
                    bright = image.norm(mat[r, c]) > 0.6
                    dark = bright if cmap == "viridis" else not bright
                    ax.text(
                        c,
                        r,
                        f"{mat[r, c]:.2g}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if dark else "white",
                    )
        ax.set_title(title, fontsize=9)
        ax.set_xticks(*thin_labels(list(range(n_cols))), fontsize=7)
        ax.set_yticks(*thin_labels(list(range(n_rows))), fontsize=7)
        ax.set_xlabel("layer j = resid[j]" if kind == "transfer_kl" else "layer l = resid[l]")
        if kind == "transfer_kl":
            ax.set_yticks(*thin_labels([*range(n_rows - 1), "id"]), fontsize=7)
            ax.set_ylabel("translator of layer i (id = identity, the logit lens)")
        else:
            ax.set_ylabel("layer l = resid[l]")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def f8_caption(drift: pd.DataFrame) -> str:
    n_tokens = int(drift.n_tokens.iloc[0])
    return (
        f"Representational drift across layers on {n_tokens} held-out tokens (position 0 of each "
        f"window left out: its states carry outsized norms). Left: mean cosine similarity of "
        f"the centred residual states of the same token at layers i and j. Middle: linear CKA "
        f"of the centred states (1 = same representation up to rotation and scale). Right: "
        f"layer transfer: the tuned-lens translator trained for layer i applied to layer j's "
        f"states, mean KL(final || lens) in nats (natural log, exact softmax, log colour "
        f"scale); the diagonal is the tuned lens, the top row (id) the logit lens. Translators "
        f"are trained to match the model's final output at their own layer only. Layer 0 = "
        f"embeddings, layer L = last block's output before the final norm."
    )
