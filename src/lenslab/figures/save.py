"""Save a figure as PNG + SVG + caption JSON, byte-identical across reruns.

Every figure file is named ``<FID>_<model>_<prompts>.<ext>`` (model names hold no underscore), so
:func:`save_figure` derives the figure id, model and prompt set from the path and puts them in
the figure's title: a PNG pasted elsewhere still says what it shows. The JSON sidecar is what the
report stage reads: ``figure``, ``title``, ``caption``, and optionally ``data`` (the Parquet
tables behind the figure), ``interactive`` (a view the report draws with plotly) and
``skipped`` (why the figure was not drawn).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lenslab.io import atomic_path, read_json, write_json  # noqa: E402
from lenslab.skipped import SKIP_COLUMN  # noqa: E402

# No dates, fixed hash salt for SVG ids: same data, same bytes.
plt.rcParams["svg.hashsalt"] = "lenslab"
plt.rcParams["svg.fonttype"] = "none"
PNG_META = {"Software": None}
SVG_META = {"Date": None, "Creator": None}

# The one layer numbering of every figure and table (the adapter's resid[l] naming).
LAYER_NOTE = (
    "Layer numbering: layer l = resid[l]; 0 = embeddings, l = output of block l-1 (blocks are "
    "0-based), the last layer is the last block's output before the final norm; the attention, "
    "MLP and heads of layer l are block l-1's and write into resid[l]."
)


def layer_label(layer: int, last: int | None = None) -> str:
    """Axis text of one residual state: '0 (embeddings)', 'l', 'L (last block)'."""
    if layer == 0:
        return "0 (embeddings)"
    if last is not None and layer == last:
        return f"{layer} (last block)"
    return str(layer)


def figure_names(path: str | Path) -> tuple[str, str, str]:
    """(figure id, model, prompt set) from ``<FID>_<model>_<prompts>.<ext>``; empty parts when
    the name does not follow the pattern (a test's temporary file)."""
    parts = Path(path).with_suffix("").name.split("_", 2)
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def figure_title(path: str | Path, what: str) -> str:
    """'F2: <what> (model embedded, prompts embedded_text)'."""
    fid, model, prompts = figure_names(path)
    if not model:
        return f"{fid}: {what}" if fid else what
    names = f"model {model}, prompts {prompts}"
    if what.endswith(")"):  # 'x (logit lens, prompt p)' -> 'x (logit lens, prompt p; model ...)'
        return f"{fid}: {what[:-1]}; {names})"
    return f"{fid}: {what} ({names})"


def _stamp_title(fig: Figure, title: str) -> None:
    """Put the title above everything: replace a suptitle, else add one above the axes."""
    if fig._suptitle is not None:  # noqa: SLF001 - matplotlib keeps no public getter
        fig._suptitle.set_text(title)
        fig._suptitle.set_fontsize(10)
    else:
        fig.suptitle(title, y=1.0, va="bottom", fontsize=10)


def _write_sidecar(meta: dict[str, Any], path: Path) -> None:
    # Compact: interactive payloads hold thousands of numbers.
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, sort_keys=True, separators=(",", ":")) + "\n")


def save_figure(
    fig: Figure,
    png_path: str | Path,
    what: str,
    caption: str,
    *,
    data: Sequence[str | Path] = (),
    interactive: dict[str, Any] | None = None,
    layers: bool = True,
) -> None:
    """Write ``X.png``, ``X.svg`` and ``X.json`` for ``png_path=X.png``.

    ``what`` says what the figure shows; the title adds the figure id, model and prompt set.
    ``layers=True`` appends the layer-numbering line to the caption. ``data`` are the tables
    behind the figure (paths relative to the working directory); ``interactive`` a view for
    the report (see :mod:`lenslab.figures.interactive`).
    """
    png_path = Path(png_path)
    stem = png_path.with_suffix("")
    title = figure_title(png_path, what)
    _stamp_title(fig, title)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata=PNG_META, bbox_inches="tight")
    with atomic_path(stem.with_suffix(".svg")) as tmp:
        fig.savefig(tmp, format="svg", metadata=SVG_META, bbox_inches="tight")
    plt.close(fig)
    meta: dict[str, Any] = {
        "figure": figure_names(png_path)[0],
        "title": title,
        "caption": f"{caption} {LAYER_NOTE}" if layers else caption,
        "data": [Path(p).as_posix() for p in data],
    }
    if interactive is not None:
        meta["interactive"] = interactive
    _write_sidecar(meta, stem.with_suffix(".json"))


def save_skipped_figure(png_path: str | Path, title: str, reason: str) -> None:
    """A placeholder figure saying what was skipped and why, with a ``skipped`` caption key."""
    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    ax.axis("off")
    body = "\n".join(textwrap.wrap(f"Skipped: {reason}", 90))
    ax.text(0.0, 1.0, f"{title}\n\n{body}", va="top", ha="left", fontsize=8, wrap=True)
    caption = f"Not computed for this model: {reason}"
    save_figure(fig, png_path, title, caption)
    json_path = Path(png_path).with_suffix(".json")
    write_json({**read_json(json_path), SKIP_COLUMN: reason}, json_path)
