"""F2-F6: logit-lens views of one prompt, as in nostalgebraist (2020).

Every view is a (layer x position) grid, the output layer at the top, each cell printing the top-1
token of the lens at that state (spaces shown as '·', newlines as '⏎'). Colours:
F2 the top-1 token's logit (clipped to the 5th-95th percentile of the shown cells, as the
original), F3 the rank of the model's final top-1 token (log scale), F4 KL(final || layer) with a
per-layer mean curve, F5 KL(input || layer) and the rank of the input token, F6 the plasma prompt:
windows around each occurrence of the prompt's answer word.

Data preparation (:func:`prompt_view`, :func:`pick_layers`, :func:`pick_positions`,
:func:`copy_positions`, :func:`grid`) is separate from drawing so that tests can check what a
figure shows without looking at pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lenslab.errors import LensLabError
from lenslab.figures.save import layer_label  # noqa: E402
from lenslab.lenses.catalog import lens_caption  # noqa: E402
from lenslab.options import ViewOptions, parse_options  # noqa: E402
from lenslab.stats.config import LensConfig  # noqa: E402

FIGURE_IDS = ("F2", "F3", "F4", "F5", "F6")
GAP = -1  # a position placeholder: an empty column between F6 windows


def parse_view_options(options: Any) -> ViewOptions:
    return parse_options(ViewOptions, options)


# -- data preparation ---------------------------------------------------------------------------
def visible(token: str, max_chars: int = 8) -> str:
    """Token text with whitespace made visible ('·' space, '⏎' newline, '⇥' tab), cut to size."""
    text = token.replace(" ", "·").replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")
    text = text or "∅"
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def prompt_view(table: pd.DataFrame, opts: ViewOptions, lens: str) -> pd.DataFrame:
    """The rows of one prompt under one lens (option ``prompt``: id or index; default first)."""
    sub = table[table["lens"] == lens]
    if sub.empty:
        raise LensLabError(
            f"lens {lens!r} is not in the table (lenses: {sorted(table['lens'].unique())})",
            fix="set the figure option `lens` to an applied lens, or add it to lens.lenses",
        )
    ids = list(dict.fromkeys(sub["prompt_id"]))
    want = opts.prompt if opts.prompt is not None else ids[0]
    if isinstance(want, int) and not isinstance(want, bool):
        if not 0 <= want < len(ids):
            raise LensLabError(f"prompt index {want} out of range", fix=f"use 0..{len(ids) - 1}")
        want = ids[want]
    if want not in ids:
        raise LensLabError(f"prompt {want!r} is not in the prompt set", fix=f"use one of {ids}")
    return sub[sub["prompt_id"] == want]


def pick_layers(layers: list[int], step: int | None = None) -> list[int]:
    """States to show, output first (top row): every ``step``-th from the input, always
    including the output; ``None`` means 1 up to 25 states, else 2 (the original's every other)."""
    layers = sorted(set(layers))
    if step is None:
        step = 1 if len(layers) <= 25 else 2
    chosen = layers[::step]
    if chosen[-1] != layers[-1]:
        chosen.append(layers[-1])
    return chosen[::-1]


def pick_positions(n_pos: int, opts: ViewOptions) -> list[int]:
    """Positions to show: explicit ``positions``, else ``max_positions`` from ``start`` (default:
    the last ones, which see the most context)."""
    if opts.positions is not None:
        bad = [p for p in opts.positions if not 0 <= p < n_pos]
        if bad:
            raise LensLabError(f"positions {bad} are outside 0..{n_pos - 1}", fix="fix the list")
        return list(opts.positions)
    width = min(opts.max_positions, n_pos)
    start = n_pos - width if opts.start is None else opts.start
    if not 0 <= start < n_pos:
        raise LensLabError(f"start={start} is outside 0..{n_pos - 1}", fix="choose a position")
    return list(range(start, min(n_pos, start + width)))


def copy_positions(view: pd.DataFrame, answer_id: int, window: int) -> list[int]:
    """F6 columns: ``window`` tokens either side of every occurrence of the answer token in the
    input, and of the last position (where the answer is predicted); GAP between windows."""
    tokens = view.drop_duplicates("position").sort_values("position")["token_id"].to_numpy()
    n = len(tokens)
    centres = [int(i) for i in np.flatnonzero(tokens == answer_id)] + [n - 1]
    keep = sorted({p for c in centres for p in range(c - window, c + window + 1) if 0 <= p < n})
    out: list[int] = []
    for p in keep:
        if out and p != out[-1] + 1:
            out.append(GAP)
        out.append(p)
    return out


@dataclass
class Grid:
    """What one heatmap shows. Rows are ``layers`` (output first), columns ``positions``."""

    layers: list[int]
    positions: list[int]
    values: np.ndarray  # [R, C], NaN in gap columns
    text: list[list[str]]  # cell texts
    outline: np.ndarray  # [R, C] bool: cell's top-1 equals the final top-1
    marks: np.ndarray  # [C] bool: the final prediction equals the true next token
    xlabels: list[str]  # input tokens (bottom)
    toplabels: list[str]  # true next tokens (top)


def grid(
    view: pd.DataFrame,
    values: str | pd.Series,
    layers: list[int],
    positions: list[int],
    max_chars: int = 8,
    ranks: bool = False,
) -> Grid:
    """A grid of ``values`` (a column name, or a Series aligned with ``view``) for one prompt.

    Cells print the lens's top-1 token, or with ``ranks=True`` the value itself as a rank
    number (rank views print ranks, as the original's)."""
    v = view.assign(_value=view[values] if isinstance(values, str) else values)
    cells = v.set_index(["layer", "position"])
    first = v.drop_duplicates("position").set_index("position")
    r, c = len(layers), len(positions)
    out = np.full((r, c), np.nan)
    text = [[""] * c for _ in range(r)]
    outline = np.zeros((r, c), dtype=bool)
    marks = np.zeros(c, dtype=bool)
    xlabels, toplabels = [], []
    for j, pos in enumerate(positions):
        if pos == GAP:
            xlabels.append("…")
            toplabels.append("")
            continue
        row = first.loc[pos]
        xlabels.append(visible(str(row["token"]), max_chars))
        toplabels.append(
            visible(str(row["next_token"]), max_chars) if row["next_token_id"] >= 0 else ""
        )
        marks[j] = row["final_top1_id"] == row["next_token_id"]
        for i, layer in enumerate(layers):
            cell = cells.loc[(layer, pos)]
            out[i, j] = cell["_value"]
            text[i][j] = (
                rank_text(cell["_value"]) if ranks else visible(str(cell["top1_token"]), max_chars)
            )
            outline[i, j] = cell["top1_id"] == cell["final_top1_id"]
    return Grid(layers, positions, out, text, outline, marks, xlabels, toplabels)


def rank_text(rank: float) -> str:
    """A rank in a narrow cell: '7', '312', '4.1k', '52k'; '' when missing."""
    if not np.isfinite(rank):
        return ""
    r = int(rank)
    if r < 1000:
        return str(r)
    return f"{r / 1000:.1f}k" if r < 10_000 else f"{r // 1000}k"


def percentile_norm(values: np.ndarray, percentiles: list[float]) -> Normalize:
    """Colour limits at the given percentiles of the finite values (the original's 5-95)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Normalize(0, 1)
    lo, hi = np.percentile(finite, percentiles)
    return Normalize(lo, hi if hi > lo else lo + 1e-6, clip=True)


def rank_norm(rank_cap: int, vocab: int) -> LogNorm:
    """Log colours from rank 1 to ``rank_cap`` (no more than the vocabulary)."""
    return LogNorm(1, max(2, min(rank_cap, vocab)), clip=True)


def kl_norm(values: np.ndarray, cap: float | None) -> Normalize:
    """KL colours from 0 to ``cap`` nats; no cap given: the 95th percentile of the shown cells
    rounded up to one significant digit (a sensible scale for small models)."""
    if cap is None:
        finite = values[np.isfinite(values)]
        top = float(np.percentile(finite, 95)) if finite.size else 1.0
        cap = _round_up(max(top, 1e-3))
    return Normalize(0, cap, clip=True)


def _round_up(x: float) -> float:
    mag = 10 ** math.floor(math.log10(x))
    return math.ceil(x / mag) * mag


# -- drawing ------------------------------------------------------------------------------------
def draw_grid(ax, g: Grid, norm: Normalize, cmap: str, last_layer: int, fontsize: float = 7):
    """Heatmap with token texts, outlines (cell = final top-1) and marked columns."""
    cm = plt.get_cmap(cmap).with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(g.values), cmap=cm, norm=norm, aspect="auto")
    for i in range(len(g.layers)):
        for j in range(len(g.positions)):
            if g.positions[j] == GAP:
                continue
            value = g.values[i, j]
            shade = cm(norm(value)) if np.isfinite(value) else (1, 1, 1, 1)
            light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2]
            ax.text(j, i, g.text[i][j], ha="center", va="center", fontsize=fontsize,
                    color="black" if light > 0.55 else "white")  # fmt: skip
            if g.outline[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2, ec="#d62728"))
    ax.set_yticks(range(len(g.layers)), [layer_label(x, last_layer) for x in g.layers])
    ax.set_xticks(
        range(len(g.positions)), g.xlabels, rotation=60, ha="right", fontsize=fontsize + 1
    )
    ax.set_ylabel("layer l = resid[l]")
    ax.set_xlabel("input token")
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(len(g.positions)), [f"{t}✓" if m else t for t, m in zip(g.toplabels, g.marks, strict=True)],
                   rotation=60, ha="left", fontsize=fontsize + 1)  # fmt: skip
    for label, mark in zip(top.get_xticklabels(), g.marks, strict=True):
        if mark:
            label.set_fontweight("bold")
            label.set_color("#2ca02c")
    top.set_xlabel("true next token (✓ = model's final top-1 is correct)", fontsize=fontsize + 1)
    ax.tick_params(axis="y", labelsize=fontsize + 1)
    for j, pos in enumerate(g.positions):
        if pos == GAP:
            ax.axvline(j, color="0.5", lw=0.8, ls=":")
    return image


def _size(g: Grid, panels: int = 1, extra: float = 0.0) -> tuple[float, float]:
    width = 2.2 + 0.62 * len(g.positions) + extra
    height = panels * (1.6 + 0.26 * len(g.layers))
    return width, height


@dataclass
class Conventions:
    """Caption text shared by the views."""

    lens: str
    cfg: LensConfig
    n_prompts: int

    def common(self, cells: str = "the lens's top-1 token") -> str:
        return (
            f"Lens: {lens_caption(self.lens)}. Cells print {cells} at each residual state (rows; "
            "the last layer at the top, row 0 = embeddings) and position (columns); '·' marks a "
            "space, '⏎' a newline. Red outlines: the cell's top-1 equals the model's final top-1; "
            "green ✓ above a column: the final top-1 is the true next token."
        )

    def kl(self, which: str, cap: float) -> str:
        return (
            f"{which} in nats (natural log), {self.cfg.clip_text}; colour capped at {cap:g} "
            "nats. 'final' is the model's own output distribution; 'input' is the lens applied "
            "to the embeddings (layer 0)."
        )


def _colorbar(fig, image, ax, label: str) -> None:
    bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.02)
    bar.set_label(label)


def figure_top1(view: pd.DataFrame, opts: ViewOptions, conv: Conventions) -> tuple[Figure, str]:
    """F2: top-1 tokens coloured by their logit."""
    g = _view_grid(view, "top1_logit", opts)
    norm = percentile_norm(g.values, opts.percentiles)
    fig, ax = plt.subplots(figsize=_size(g, extra=1.0), layout="constrained")
    image = draw_grid(ax, g, norm, "Blues", _last(view))
    _colorbar(fig, image, ax, "logit of the top-1 token")
    lo, hi = opts.percentiles
    caption = (
        f"{conv.common()} Colour: the top-1 token's logit, clipped to the {lo:g}th-{hi:g}th "
        f"percentile of the shown cells ({norm.vmin:.2f} to {norm.vmax:.2f})."
    )
    return fig, caption


def figure_rank(view: pd.DataFrame, opts: ViewOptions, conv: Conventions) -> tuple[Figure, str]:
    """F3: rank of the model's final top-1 token under each layer's lens (log colours)."""
    g = _view_grid(view, "rank_final_top1", opts, ranks=True)
    cap = _rank_cap(opts, conv)
    norm = rank_norm(cap, _vocab(view))
    fig, ax = plt.subplots(figsize=_size(g, extra=1.0), layout="constrained")
    image = draw_grid(ax, g, norm, "Blues_r", _last(view))
    _colorbar(fig, image, ax, "rank of the final top-1 token (log)")
    caption = (
        f"{conv.common('the rank')} Colour and number: the 1-based rank of the model's final "
        "top-1 token (not the true "
        f"token) under each layer's lens, log scale from 1 to {norm.vmax:g} (ranks above are "
        "drawn at the cap)."
    )
    return fig, caption


def figure_kl(
    view: pd.DataFrame, opts: ViewOptions, conv: Conventions, means: pd.DataFrame | None
) -> tuple[Figure, str]:
    """F4: KL(final || layer) per cell, and the per-layer mean over positions."""
    g = _view_grid(view, "kl_final", opts)
    norm = kl_norm(g.values, opts.kl_cap if opts.kl_cap is not None else conv.cfg.kl_cap)
    w, h = _size(g, extra=4.0)
    fig, (ax, side) = plt.subplots(
        1,
        2,
        figsize=(w, h),
        gridspec_kw={"width_ratios": [max(3, len(g.positions)), 5]},
        layout="constrained",
    )
    image = draw_grid(ax, g, norm, "Blues_r", _last(view))
    _colorbar(fig, image, ax, "KL(final || layer), nats")
    _mean_curve(side, view, "kl_final", means, conv)
    side.set_xlabel("mean KL(final || layer), nats")
    caption = (
        f"{conv.common()} Colour: {conv.kl('KL(final || layer)', norm.vmax)} Right: mean over "
        f"positions per layer, for this prompt (all its positions) and over all {conv.n_prompts} "
        "prompt(s) of the set with a 95% normal confidence band (rows = prompt x position)."
    )
    return fig, caption


def figure_input(view: pd.DataFrame, opts: ViewOptions, conv: Conventions) -> tuple[Figure, str]:
    """F5: KL(input || layer) and the rank of the input token at each layer."""
    g_kl = _view_grid(view, "kl_input", opts)
    g_rank = _view_grid(view, "rank_input", opts, ranks=True)
    norm = kl_norm(g_kl.values, opts.kl_cap if opts.kl_cap is not None else conv.cfg.kl_cap)
    rnorm = rank_norm(_rank_cap(opts, conv), _vocab(view))
    fig, axes = plt.subplots(2, 1, figsize=_size(g_kl, panels=2, extra=1.0), layout="constrained")
    image = draw_grid(axes[0], g_kl, norm, "Blues_r", _last(view))
    _colorbar(fig, image, axes[0], "KL(input || layer), nats")
    axes[0].set_title("KL(input || layer)")
    image = draw_grid(axes[1], g_rank, rnorm, "Blues_r", _last(view))
    _colorbar(fig, image, axes[1], "rank of the input token (log)")
    axes[1].set_title("rank of the input token")
    caption = (
        f"{conv.common()} Top: {conv.kl('KL(input || layer)', norm.vmax)} Bottom: the cells print "
        "the 1-based rank of the input token at each position (k = thousands), log colours "
        f"from 1 to {rnorm.vmax:g} (the cap)."
    )
    return fig, caption


def figure_copy(
    view: pd.DataFrame, tracked: pd.DataFrame, opts: ViewOptions, conv: Conventions
) -> tuple[Figure, str]:
    """F6: around each occurrence of the prompt's answer word: top-1, rank of the answer, rank
    of the input token."""
    answer = tracked[
        (tracked["prompt_id"] == view["prompt_id"].iloc[0]) & (tracked["role"] == "answer")
    ]
    answer = answer[answer["lens"] == view["lens"].iloc[0]]
    if answer.empty:
        raise LensLabError(
            f"prompt {view['prompt_id'].iloc[0]!r} has no answer word to look for",
            fix="give the prompt an `answer` (the rare word, e.g. plasma) in its prompt set",
        )
    word, answer_id = str(answer["target"].iloc[0]), int(answer["token_id"].iloc[0])
    positions = copy_positions(view, answer_id, opts.window)
    layers = pick_layers(view["layer"].unique().tolist(), opts.layer_step)
    rank = answer.set_index(["layer", "position"])["rank"]
    ans_rank = pd.Series(
        rank.reindex(pd.MultiIndex.from_frame(view[["layer", "position"]])).to_numpy(),
        index=view.index,
    )
    g_top = grid(view, "top1_logit", layers, positions, opts.max_token_chars)
    g_ans = grid(view, ans_rank, layers, positions, opts.max_token_chars, ranks=True)
    g_in = grid(view, "rank_input", layers, positions, opts.max_token_chars, ranks=True)
    rnorm = rank_norm(_rank_cap(opts, conv), _vocab(view))
    fig, axes = plt.subplots(3, 1, figsize=_size(g_top, panels=3, extra=1.0), layout="constrained")
    panels = [
        (g_top, percentile_norm(g_top.values, opts.percentiles), "Blues", "logit of the top-1 token", "top-1 token (colour: its logit)"),
        (g_ans, rnorm, "Blues_r", f"rank of '{word}' (log)", f"rank of the answer '{word}'"),
        (g_in, rnorm, "Blues_r", "rank of the input token (log)", "rank of the input token"),
    ]  # fmt: skip
    for ax, (g, norm, cmap, label, title) in zip(axes, panels, strict=True):
        image = draw_grid(ax, g, norm, cmap, _last(view))
        _colorbar(fig, image, ax, label)
        ax.set_title(title)
    lo, hi = opts.percentiles
    caption = (
        f"{conv.common()} Columns: {opts.window} tokens either side of each occurrence of the rare "
        f"word '{word}' (the prompt's answer) and of the last position, where the model must copy "
        f"it; dotted lines separate the windows. Top: colour = top-1 logit ({lo:g}th-{hi:g}th "
        f"percentile clip). Middle: cells print the 1-based rank of '{word}'. Bottom: the rank of "
        f"the input token "
        f"(is the current token preserved?). Ranks on log colours from 1 to {rnorm.vmax:g}."
    )
    return fig, caption


def _view_grid(view: pd.DataFrame, column: str, opts: ViewOptions, ranks: bool = False) -> Grid:
    layers = pick_layers(view["layer"].unique().tolist(), opts.layer_step)
    positions = pick_positions(int(view["position"].max()) + 1, opts)
    return grid(view, column, layers, positions, opts.max_token_chars, ranks)


def positions_text(view: pd.DataFrame, opts: ViewOptions) -> str:
    """Which positions a F2-F5 view shows, for its caption."""
    n_pos = int(view["position"].max()) + 1
    shown = pick_positions(n_pos, opts)
    if opts.positions is not None:
        which = f"positions {shown} (0-based) of the prompt's {n_pos} tokens"
    elif len(shown) == n_pos:
        which = f"all {n_pos} positions of the prompt"
    else:
        part = "the last" if opts.start is None else "a window of"
        which = (
            f"{part} {len(shown)} of the prompt's {n_pos} positions "
            f"(positions {shown[0]}-{shown[-1]}, 0-based)"
        )
    return f"Columns: {which}; the report's interactive view shows all {n_pos}."


def _last(view: pd.DataFrame) -> int:
    return int(view["layer"].max())


def _vocab(view: pd.DataFrame) -> int:
    return int(view["vocab_size"].iloc[0]) if "vocab_size" in view else 10**9


def _rank_cap(opts: ViewOptions, conv: Conventions) -> int:
    return opts.rank_cap if opts.rank_cap is not None else conv.cfg.rank_cap


def _mean_curve(ax, view: pd.DataFrame, metric: str, means: pd.DataFrame | None, conv) -> None:
    """Per-layer mean, layer on the vertical axis (output at the top), this prompt + the set."""
    own = view.groupby("layer")[metric].mean()
    ax.plot(own.to_numpy(), own.index, "o-", ms=3, color="#1f77b4", label="this prompt")
    if means is not None and not means.empty:
        m = means[(means["metric"] == metric) & (means["lens"] == conv.lens)].sort_values("layer")
        ax.plot(m["mean"], m["layer"], "s--", ms=3, color="#ff7f0e", label="all prompts")
        ax.fill_betweenx(m["layer"], m["ci_low"], m["ci_high"], color="#ff7f0e", alpha=0.25)
    ax.set_ylim(-0.5, _last(view) + 0.5)
    ax.set_ylabel("layer l = resid[l] (last at the top)")
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


def make_view(
    fid: str,
    table: pd.DataFrame,
    tracked: pd.DataFrame | None,
    means: pd.DataFrame | None,
    options: Any,
    cfg: LensConfig,
) -> tuple[Figure, str, str]:
    """(figure, title, caption) of one of F2-F6 for the first (or chosen) prompt of a set."""
    if fid not in FIGURE_IDS:
        raise LensLabError(f"unknown logit-lens figure {fid!r}", fix=f"use one of {FIGURE_IDS}")
    opts = parse_view_options(options)
    lens = opts.lens or cfg.lenses[0]
    view = prompt_view(table, opts, lens)
    conv = Conventions(lens, cfg, table["prompt_id"].nunique())
    pid = view["prompt_id"].iloc[0]
    if fid == "F2":
        fig, caption = figure_top1(view, opts, conv)
        title = f"Top-1 token through the layers ({lens} lens, prompt {pid})"
    elif fid == "F3":
        fig, caption = figure_rank(view, opts, conv)
        title = f"Rank of the final top-1 token ({lens} lens, prompt {pid})"
    elif fid == "F4":
        fig, caption = figure_kl(view, opts, conv, means)
        title = f"KL(final || layer) ({lens} lens, prompt {pid})"
    elif fid == "F5":
        fig, caption = figure_input(view, opts, conv)
        title = f"Input view: KL(input || layer) and input-token rank ({lens} lens, prompt {pid})"
    else:
        if tracked is None:
            raise LensLabError(
                "F6 needs the tracked-token table", fix="pass <lens>.targets.parquet"
            )
        fig, caption = figure_copy(view, tracked, opts, conv)
        title = f"Copying a rare token ({lens} lens, prompt {pid})"
    if fid != "F6":
        caption = f"{caption} {positions_text(view, opts)}"
    fig.suptitle(title, fontsize=10)
    return fig, title, caption
