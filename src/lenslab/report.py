"""Report stage: one HTML page with every figure, its caption and the study's settings.

Figures are linked by relative path (the page lives in results/), so the report is byte-stable
and moves with the results folder.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lenslab.io import atomic_path, read_json


def _figure_key(path: Path) -> tuple[int, str, str]:
    """Natural order: F2 before F10, then by name."""
    match = re.match(r"F(\d+)([a-z]?)_", path.name)
    return (int(match.group(1)) if match else 999, match.group(2) if match else "", path.name)


def _section(sidecar: Path, root: Path) -> str:
    meta = read_json(sidecar)
    png = sidecar.with_suffix(".png").relative_to(root).as_posix()
    svg = sidecar.with_suffix(".svg").relative_to(root).as_posix()
    return (
        f'<section id="{html.escape(sidecar.stem)}">\n'
        f"<h2>{html.escape(meta['title'])}</h2>\n"
        f'<a href="{svg}"><img src="{png}" alt="{html.escape(meta["figure"])}"></a>\n'
        f"<p class=caption><b>{html.escape(meta['figure'])}.</b> {html.escape(meta['caption'])}"
        f' <a href="{svg}">[vector]</a></p>\n</section>'
    )


def build_report(
    sidecars: Sequence[str | Path],
    out: str | Path,
    study: dict[str, Any],
    extras: dict[str, Any] | None = None,
) -> None:
    """Write the report to ``out``; ``sidecars`` are the figures' caption JSON files."""
    out = Path(out)
    root = out.parent
    files = sorted((Path(s) for s in sidecars), key=_figure_key)
    toc = "".join(
        f'<li><a href="#{html.escape(f.stem)}">{html.escape(f.stem)}</a></li>' for f in files
    )
    body = "\n".join(_section(f, root) for f in files)
    settings = html.escape(json.dumps(study, indent=1, sort_keys=True))
    extra = "".join(
        f"<h3>{html.escape(k)}</h3><pre>{html.escape(json.dumps(v, indent=1, sort_keys=True))}</pre>"
        for k, v in sorted((extras or {}).items())
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lenslab report: {html.escape(study.get("name", ""))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}}
img{{max-width:100%;border:1px solid #ddd}} .caption{{color:#333}} pre{{background:#f6f6f6;
padding:.5em;overflow:auto;font-size:80%}}</style></head><body>
<h1>lenslab report: study <code>{html.escape(study.get("name", ""))}</code></h1>
<p>{html.escape(study.get("description", ""))}</p>
<p>{len(files)} figures. Every file here is rebuilt by <code>snakemake --cores all</code>.</p>
<ul>{toc}</ul>
{body}
<h2>Settings</h2>{extra}<h3>study</h3><pre>{settings}</pre>
</body></html>
"""
    with atomic_path(out) as tmp:
        tmp.write_text(page)
