"""Report stage: one HTML page with every figure, its caption, its data and the run's provenance.

Each figure gets its interactive views (drawn by plotly.js, embedded once from the installed
plotly package: the page works offline), its static PNG at full size in a scrolling box (the SVG
is linked), its caption, and links to the Parquet tables behind it. A figure whose sidecar says
``skipped`` shows as a note. Files are linked by relative path (the page lives in results/) and
nothing time- or machine-dependent is written, so a rerun gives the same bytes.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from lenslab.errors import LensLabError
from lenslab.figures.save import LAYER_NOTE
from lenslab.io import atomic_path, read_json, read_parquet
from lenslab.report_js import RENDER_JS

PACKAGES = ("lenslab", "torch", "transformers", "tokenizers", "safetensors", "hydra-core",
            "omegaconf", "snakemake", "numpy", "pandas", "pyarrow", "matplotlib", "plotly")  # fmt: skip
FAMILIES = {
    "F1": "hidden-state differences",
    "F2": "logit lens",
    "F3": "logit lens",
    "F4": "logit lens",
    "F5": "logit lens",
    "F6": "logit lens",
    "F17": "logit lens",
    "F7": "tuned lens",
    "F8": "tuned lens",
    "F9": "patchscopes",
    "F10": "attribution",
    "F11": "attribution",
    "F12": "attribution",
    "F13": "causal tracing",
    "F13b": "causal tracing",
    "F13c": "causal tracing",
    "F14": "iterative inference",
    "F15": "visibility",
    "F16": "look-ahead",
    "F16b": "look-ahead",
}
MAX_TABLE_ROWS = 200


def figure_family(fid: str) -> str:
    """The group a figure is listed under (report and `snakemake --report`)."""
    return FAMILIES.get(fid, "other")


def _figure_key(path: Path) -> tuple[int, str, str]:
    """Natural order: F2 before F10, then by name."""
    match = re.match(r"F(\d+)([a-z]?)_", path.name)
    return (int(match.group(1)) if match else 999, match.group(2) if match else "", path.name)


def _rel(path: str | Path, root: Path) -> str:
    """``path`` (relative to the working directory) as a link from the page in ``root``."""
    return Path(os.path.relpath(Path(path), root)).as_posix()


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")


def _views(meta: dict[str, Any], stem: str) -> str:
    views = (meta.get("interactive") or {}).get("views", [])
    out = []
    for i, view in enumerate(views):
        target = f"{stem}-view{i}"
        out.append(
            f'<div class=scroll><div class=view id="{html.escape(target)}"></div></div>\n'
            f'<script type="application/json" class=view-spec data-target="{html.escape(target)}">'
            f"{_script_json(view)}</script>"
        )
    return "\n".join(out)


def _section(sidecar: Path, meta: dict[str, Any], root: Path) -> str:
    stem = sidecar.stem
    fid = meta.get("figure", stem.split("_", 1)[0])
    title = html.escape(meta.get("title", stem))
    head = f'<section id="{html.escape(stem)}" class=figure data-figure="{html.escape(fid)}">\n'
    head += f"<h2>{title}</h2>\n"
    if "skipped" in meta:
        model = stem.split("_")[1] if stem.count("_") >= 2 else "?"
        note = f"{fid} skipped for model {model}: {meta['skipped']}"
        return head + f"<p class=skipped>{html.escape(note)}</p>\n</section>"
    png = _rel(sidecar.with_suffix(".png"), root)
    svg = _rel(sidecar.with_suffix(".svg"), root)
    data = " ".join(
        f'<a class=data href="{html.escape(_rel(p, root))}">{html.escape(Path(p).name)}</a>'
        for p in meta.get("data", [])
    )
    views = _views(meta, stem)
    static = (
        f'<div class=scroll><a href="{svg}"><img src="{png}" alt="{html.escape(fid)}"></a></div>'
    )
    if views:  # the static figure stays, folded, for papers
        static = f"<details><summary>static figure (PNG/SVG)</summary>{static}</details>"
    return (
        head
        + (views + "\n" if views else "")
        + static
        + f"\n<p class=caption><b>{html.escape(fid)}.</b> {html.escape(meta['caption'])}</p>\n"
        + f'<p class=links>Files: <a href="{png}">PNG</a> <a href="{svg}">SVG</a>'
        + (f" · data: {data}" if data else "")
        + "</p>\n</section>"
    )


def _table_html(path: str | Path, root: Path) -> str:
    """One extra table (e.g. findings.parquet) as HTML, at most MAX_TABLE_ROWS rows."""
    table = read_parquet(path)
    shown = table.head(MAX_TABLE_ROWS)
    note = f" (first {MAX_TABLE_ROWS} of {len(table)} rows)" if len(table) > MAX_TABLE_ROWS else ""
    body = shown.to_html(index=False, escape=True, border=0, classes="extra", na_rep="")
    name = Path(path).name
    return (
        f'<h3 id="table-{html.escape(Path(path).stem)}">{html.escape(name)}{note}</h3>\n'
        f'<p class=links><a href="{html.escape(_rel(path, root))}">{html.escape(name)}</a></p>\n'
        f"<div class=scroll>{body}</div>"
    )


def provenance(repo: str | Path | None = None) -> dict[str, Any]:
    """Package versions and the git commit of the code (no dates, no paths)."""
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
            check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "not available (not a git checkout)"
    return {"packages": versions, "git commit": commit}


def _plotly_js() -> str:
    """plotly.js from the installed plotly package, embedded once (no CDN: works offline)."""
    try:
        import plotly
    except ImportError as err:
        raise LensLabError(
            "the report's interactive views need the plotly package", fix="pip install plotly"
        ) from err
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path.read_text(encoding="utf-8").replace("</script", "<\\/script")


STYLE = """body{font-family:sans-serif;margin:0 auto;padding:1em 2em;max-width:100%}
main{max-width:1400px} p,li{max-width:1100px}
.scroll{overflow-x:auto;max-width:100%;margin:.3em 0}
.scroll img{max-width:none;border:1px solid #ddd}
.caption{color:#333} .links{font-size:90%} .skipped{background:#fff4e5;border-left:4px solid
#f0a020;padding:.5em 1em} pre{background:#f6f6f6;padding:.5em;overflow:auto;font-size:80%}
table.extra{border-collapse:collapse;font-size:85%} table.extra td,table.extra th{border:1px solid
#ccc;padding:2px 6px} summary{cursor:pointer;color:#555} .family{margin-top:2em;border-top:2px
solid #888}"""


def build_report(
    sidecars: Sequence[str | Path],
    out: str | Path,
    study: dict[str, Any],
    extras: dict[str, Any] | None = None,
    *,
    tables: Sequence[str | Path] = (),
    prov: dict[str, Any] | None = None,
) -> None:
    """Write the report to ``out``; ``sidecars`` are the figures' caption JSON files (paths
    relative to the working directory, like ``tables``, extra Parquet tables shown at the end;
    ``extras`` are settings shown as JSON; ``prov`` the provenance, see :func:`provenance`)."""
    out = Path(out)
    root = out.parent
    files = sorted((Path(s) for s in sidecars), key=_figure_key)
    metas = {f: read_json(f) for f in files}
    families: dict[str, list[Path]] = {}
    for f in files:
        families.setdefault(figure_family(metas[f].get("figure", "")), []).append(f)
    toc, body = [], []
    for family, members in families.items():
        links = ", ".join(
            f'<a href="#{html.escape(f.stem)}">{html.escape(f.stem)}</a>'
            + (" (skipped)" if "skipped" in metas[f] else "")
            for f in members
        )
        toc.append(f"<li><b>{html.escape(family)}</b>: {links}</li>")
        body.append(f'<h2 class=family id="family-{html.escape(family.replace(" ", "-"))}">'
                    f"{html.escape(family)}</h2>")  # fmt: skip
        body += [_section(f, metas[f], root) for f in members]
    has_views = any((m.get("interactive") or {}).get("views") for m in metas.values())
    scripts = f"<script>{_plotly_js()}</script>\n<script>{RENDER_JS}</script>" if has_views else ""
    extra_tables = "\n".join(_table_html(t, root) for t in tables)
    settings = "".join(
        f"<h3>{html.escape(k)}</h3><pre>{html.escape(json.dumps(v, indent=1, sort_keys=True))}</pre>"
        for k, v in sorted((extras or {}).items())
    )
    prov_html = (
        f"<pre>{html.escape(json.dumps(prov, indent=1, sort_keys=True))}</pre>" if prov else ""
    )
    name = html.escape(study.get("name", ""))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lenslab report: {name}</title>
<style>{STYLE}</style></head><body><main>
<h1>lenslab report: study <code>{name}</code></h1>
<p>{html.escape(study.get("description", ""))}</p>
<p>{len(files)} figures. Every file here is rebuilt by <code>snakemake --cores all</code>.
Heatmaps are interactive: hover a cell for its values (top-k tokens and probabilities in the lens
views), drag to zoom, double-click to reset; wide views scroll sideways. The static PNG/SVG of each
figure is under "static figure".</p>
<p class=numbering><b>{html.escape(LAYER_NOTE)}</b></p>
<ul>{"".join(toc)}</ul>
{"".join(body)}
{'<h2 id="tables">Tables</h2>' + extra_tables if extra_tables else ""}
<h2 id="provenance">Provenance</h2>
<p>Package versions and the code's git commit of the run that wrote this page; below, the settings
of every stage (the composed Hydra config).</p>
{prov_html}
<h2 id="settings">Settings</h2>{settings}<h3>study</h3><pre>{html.escape(json.dumps(study, indent=1, sort_keys=True))}</pre>
</main>
{scripts}
</body></html>
"""
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
