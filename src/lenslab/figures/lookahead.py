"""F16: look-ahead (does layer l at position t already predict tokens t+2, t+3?) and detours
(does the way to the answer pass through another word?), both through the logit lens."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from lenslab.stats.aggregate import mean_ci

TOP_COLUMNS = [f"top{i}_id" for i in range(1, 6)]


def _layer_curves(stats: pd.DataFrame, by: str, value: str, labels: dict, ylabel: str) -> Figure:
    """One line per ``by`` group over layers, with its confidence band, on a 0..1 axis."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for key, g in stats.groupby(by):
        ax.plot(g["layer"], g[value], "o-", label=labels[key])
        ax.fill_between(g["layer"], g["ci_low"], g["ci_high"], alpha=0.2)
    ax.set_xlabel("layer l = resid[l] (0 = embeddings)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lookahead_hits(table: pd.DataFrame, max_ahead: int = 3) -> pd.DataFrame:
    """Per (layer, ahead k): the fraction of positions t whose lens top-5 at (layer, t) holds
    the token at t + k (k = 1 is the ordinary next token). ``table`` is a lens table."""
    rows = []
    for _, g in table.groupby("prompt_id", sort=False):
        ids = g.drop_duplicates("position").set_index("position")["token_id"].sort_index()
        for layer, rows_l in g.groupby("layer"):
            top = rows_l.set_index("position")[TOP_COLUMNS].sort_index()
            for k in range(1, max_ahead + 1):
                future = ids.shift(-k).reindex(top.index)
                ok = future.notna()
                hit = top[ok].eq(future[ok], axis=0).any(axis=1)
                rows += [(layer, k, float(h)) for h in hit]
    hits = pd.DataFrame(rows, columns=["layer", "ahead", "hit"])
    out = []
    for (layer, k), g in hits.groupby(["layer", "ahead"]):
        m, lo, hi = mean_ci(g["hit"].to_numpy(), bounds=(0.0, 1.0))
        out.append((layer, k, m, lo, hi, len(g)))
    return pd.DataFrame(out, columns=["layer", "ahead", "top5", "ci_low", "ci_high", "n"])


def plot_lookahead(table: pd.DataFrame, model: str, max_ahead: int = 3) -> tuple[Figure, str]:
    stats = lookahead_hits(table, max_ahead)
    labels = {k: "t+1 (next token)" if k == 1 else f"t+{k}" for k in stats["ahead"].unique()}
    fig = _layer_curves(stats, "ahead", "top5", labels, "token at t+k in the lens top-5 at t")
    last = stats[stats["layer"] == stats["layer"].max()].set_index("ahead")["top5"]
    best2 = stats[stats["ahead"] == 2].set_index("layer")["top5"]
    caption = (
        f"Look-ahead through the logit lens on {model}: the share of positions t at which the "
        "token at t+k is among the lens's top 5 at layer l (95% CI). At the output: "
        + ", ".join(f"t+{k} {v:.2f}" for k, v in last.items())
        + (
            f"; t+2 peaks at layer {int(best2.idxmax())} ({best2.max():.2f})."
            if len(best2)
            else "."
        )
    )
    return fig, caption


def detour_curves(targets: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, role): mean lens probability at each prompt's last position of the answer
    (role answer) and of the prompt's first other tracked word (role other)."""
    last = targets[targets["position"] == targets.groupby("prompt_id")["position"].transform("max")]
    # A word listed both as the answer and among the targets has a row per role: keep one.
    last = last.drop_duplicates(["prompt_id", "layer", "target"])
    rows = []
    for pid, g in last.groupby("prompt_id", sort=False):
        answer = g.loc[g["role"] == "answer", "target"].iloc[0]
        others = [t for t in dict.fromkeys(g["target"]) if t != answer]
        if not others:
            continue
        for role, word in (("answer", answer), ("other", others[0])):
            for layer, p in g[g["target"] == word][["layer", "prob"]].itertuples(index=False):
                rows.append((pid, layer, role, float(p)))
    if not rows:
        raise ValueError("no prompt tracks a word besides its answer: give prompts `targets`")
    per = pd.DataFrame(rows, columns=["prompt_id", "layer", "role", "prob"])
    out = []
    for (layer, role), g in per.groupby(["layer", "role"]):
        m, lo, hi = mean_ci(g["prob"].to_numpy(), bounds=(0.0, 1.0))
        out.append((layer, role, m, lo, hi, len(g)))
    return pd.DataFrame(out, columns=["layer", "role", "prob", "ci_low", "ci_high", "n"])


def plot_detour(
    targets: pd.DataFrame, model: str, prefix_summed: bool = False
) -> tuple[Figure, str]:
    """``prefix_summed``: the table's probabilities are sums over the tokens that are prefixes
    of each word (Wendler et al.), so words of several tokens count too."""
    curves = detour_curves(targets)
    names = {"answer": "answer (target-language word)", "other": "other word (same concept)"}
    fig = _layer_curves(
        curves, "role", "prob", names, "logit-lens probability at the last position"
    )
    other = curves[curves["role"] == "other"].set_index("layer")["prob"]
    answer = curves[curves["role"] == "answer"].set_index("layer")["prob"]
    detour = other[(other > answer) & (other >= 0.01)]  # near-zero ties are no detour
    n = int(curves["n"].max())
    caption = (
        f"Detour through the logit lens on {model}, {n} prompts: probability of the answer and "
        "of the other tracked word for the same concept at the last position, per layer (95% "
        "CI). The tuned lens is not used here on purpose: it is trained to map every layer onto "
        "the final output, so it would hide a detour. "
        + (
            "A word's probability is the sum over every token that is a prefix of it (Wendler "
            "et al. 2024), so words of several tokens count. "
            if prefix_summed
            else ""
        )
        + (
            f"The other word leads at layers {', '.join(str(int(x)) for x in detour.index)} "
            f"(peak {other.max():.2f} at layer {int(other.idxmax())})."
            if len(detour)
            else f"The other word never leads with probability 0.01 or more (peak {other.max():.2f})."
        )
    )
    return fig, caption


def plot_beam(
    beams: pd.DataFrame, model: str, lens: str, width: int, depth: int
) -> tuple[Figure, str]:
    """F16c: the best beam continuation read from each layer (rows) at each position (columns)."""
    from lenslab.figures.tables import clip, text_table  # text tables only for this view

    top = beams[beams["rank"] == 0]
    positions = sorted(top["position"].unique())
    layers = sorted(top["layer"].unique())[::-1]
    idx = top.set_index(["layer", "position"])
    cells = [[clip(f"{idx.loc[(la, p), 'text']} ({idx.loc[(la, p), 'logprob']:.1f})") for p in positions]
             for la in layers]  # fmt: skip
    tokens = beams.drop_duplicates("position").set_index("position")
    heads = [f"t = {p}" for p in positions]
    fig = text_table(cells, [f"l = {x}" for x in layers], heads)
    caption = (
        f"Beam over the {lens} lens on {model}: from layer l at position t, the best of a beam of "
        f"width {width} over continuations of {depth} tokens, every token scored by the lens at "
        "layer l (the model runs on the beam's tokens; the reading stays at layer l); in "
        "brackets the summed lens log-probability (nats). At the top layer it is ordinary beam "
        f"search on the model. Prompt {tokens['prompt_id'].iloc[0]!r}."
    )
    return fig, caption
