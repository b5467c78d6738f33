"""Save a figure as PNG + SVG + caption JSON, byte-identical across reruns."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lenslab.io import atomic_path, write_json  # noqa: E402

# No dates, fixed hash salt for SVG ids: same data, same bytes.
plt.rcParams["svg.hashsalt"] = "lenslab"
plt.rcParams["svg.fonttype"] = "none"
PNG_META = {"Software": None}
SVG_META = {"Date": None, "Creator": None}


def save_figure(fig: Figure, png_path: str | Path, title: str, caption: str) -> None:
    """Write ``X.png``, ``X.svg`` and ``X.json`` ({figure, title, caption}) for ``png_path=X.png``.

    The JSON sidecar is what the report stage reads to caption the figure.
    """
    png_path = Path(png_path)
    stem = png_path.with_suffix("")
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata=PNG_META, bbox_inches="tight")
    with atomic_path(stem.with_suffix(".svg")) as tmp:
        fig.savefig(tmp, format="svg", metadata=SVG_META, bbox_inches="tight")
    plt.close(fig)
    figure_id = stem.name.split("_", 1)[0]
    write_json({"figure": figure_id, "title": title, "caption": caption}, stem.with_suffix(".json"))
