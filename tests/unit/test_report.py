"""The report: titles, one layer numbering, rank views, interactive views, skipped figures,
data links, provenance, byte-stable output, and a real headless Chromium loading the page.

The report is built from small synthetic inputs (a random tiny model through the real figure
code), so no study has to run first.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lenslab.extract import extract
from lenslab.figures.dla import layer_names
from lenslab.figures.interactive import lens_views, patching_views, visibility_view
from lenslab.figures.iterative import plot_iterative
from lenslab.figures.logit_lens import grid, make_view, pick_layers, prompt_view, rank_text
from lenslab.figures.patching import heatmap_panels, plot_heatmaps
from lenslab.figures.save import LAYER_NOTE, figure_title, save_figure, save_skipped_figure
from lenslab.figures.visibility import plot_visibility
from lenslab.io import read_json, write_parquet
from lenslab.lenses.logit import LogitLens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.patching import parse_config, run_patching
from lenslab.prompts import encode_set
from lenslab.report import build_report, provenance
from lenslab.stats.aggregate import layer_means
from lenslab.stats.config import LensConfig
from lenslab.stats.lens_stats import apply_lens
from lenslab.visibility import visibility_table

TEXT = {"name": "dev", "prompts": [{"id": "long", "text": " ".join(f"w{i}" for i in range(1, 27))}]}
PATCH = {
    "name": "toy",
    "prompts": [
        {"id": "a", "text": "w1 w2 w3 w4 w5 w6", "subject": "w3 w4", "answer": "w9"},
        {"id": "b", "text": "w1 w2 w7 w8 w5 w6", "subject": "w7 w8", "answer": "w10"},
    ],
    "pairs": [{"clean": "a", "corrupt": "b"}],
}
LENS_FIGURES = ("F2", "F3", "F4", "F5")


@pytest.fixture(scope="module")
def adapter() -> ModelAdapter:
    torch.set_num_threads(1)
    return ModelAdapter(build_tiny("gpt2", n_layer=4), tiny_tokenizer(), name="tiny")


@pytest.fixture(scope="module")
def lens_table(adapter):
    prompts = encode_set(adapter.tokenizer, TEXT)
    acts = extract(adapter, prompts, batch_size=1, progress=False)
    table, tracked = apply_lens(LogitLens(adapter), acts, prompts, LensConfig(), lens_name="logit")
    return table, tracked, layer_means(table)


@pytest.fixture(scope="module")
def report(tmp_path_factory, adapter, lens_table) -> Path:
    """A report like the study's: F2-F5 (interactive), F13, F15 (every cell), a skipped F10,
    and an extra table, all in <tmp>/results."""
    results = tmp_path_factory.mktemp("study") / "results"
    figs = results / "figures"
    table, tracked, means = lens_table
    lens_parquet = results / "lens/tiny/dev/logit.parquet"
    write_parquet(table, lens_parquet)
    cfg = LensConfig()
    for fid in LENS_FIGURES:
        fig, title, caption = make_view(fid, table, tracked, means, {}, cfg)
        save_figure(fig, figs / f"{fid}_tiny_dev.png", title, caption, data=[lens_parquet],
                    interactive=lens_views(fid, table, {}, cfg))  # fmt: skip
    patch = run_patching(adapter, PATCH, parse_config({"mode": "pairs", "window": 2}),
                         progress=False)  # fmt: skip
    fig, caption = plot_heatmaps(patch, model="tiny")
    save_figure(fig, figs / "F13_tiny_toy.png", "causal tracing", caption,
                interactive=patching_views(heatmap_panels(patch)))  # fmt: skip
    vis = visibility_table(adapter, {"name": "v", "prompts": [{"id": "v", "text": "w1 w2 w3 w4"}]})
    fig, caption = plot_visibility(vis, -1, -1, "tiny")
    view = visibility_view(vis, (4, 3), "hover a cell")
    save_figure(fig, figs / "F15_tiny_v.png", "visibility", caption,
                interactive={"views": [view]})  # fmt: skip
    save_skipped_figure(
        figs / "F10_tiny_dev.png", "direct logit attribution", "fidelity gate failed"
    )
    findings = results / "findings.parquet"
    write_parquet(pd.DataFrame({"claim": ["a < b"], "value": [0.5], "holds": [True]}), findings)
    sidecars = sorted(figs.glob("*.json"))
    build_report(sidecars, results / "report.html", {"name": "synthetic"},
                 {"config": {"lens": {"topk": 5}}}, tables=[findings],
                 prov=provenance())  # fmt: skip
    return results / "report.html"


# -- titles, numbering, rank views --------------------------------------------------------------
def test_every_title_names_figure_model_and_prompts(report):
    for sidecar in (report.parent / "figures").glob("*.json"):
        fid, model, prompts = sidecar.stem.split("_", 2)
        title = read_json(sidecar)["title"]
        assert title.startswith(f"{fid}: ") and f"model {model}, prompts {prompts})" in title
    assert figure_title("F17_gpt2_a_b.png", "x") == "F17: x (model gpt2, prompts a_b)"
    assert figure_title("F2_m_p.png", "y (lens z)") == "F2: y (lens z; model m, prompts p)"
    f2 = read_json(report.parent / "figures/F2_tiny_dev.json")
    assert f2["caption"].endswith(LAYER_NOTE)


def test_f2_caption_names_the_positions_shown(report):
    caption = read_json(report.parent / "figures/F2_tiny_dev.json")["caption"]
    # 26 words -> 26 tokens; the static view shows the last 20: positions 6-25.
    assert "the last 20 of the prompt's 26 positions (positions 6-25, 0-based)" in caption
    assert "interactive view shows all 26" in caption


def test_rank_views_print_rank_numbers(lens_table):
    table, _, _ = lens_table
    view = prompt_view(table, make_opts(), "logit")
    layers = pick_layers(view["layer"].unique().tolist())
    g = grid(view, "rank_final_top1", layers, [0, 5], ranks=True)
    cells = view.set_index(["layer", "position"])["rank_final_top1"]
    assert g.text[0][1] == str(int(cells[(layers[0], 5)]))
    assert [rank_text(r) for r in (1, 999, 4123, 52000, np.nan)] == ["1", "999", "4.1k", "52k", ""]


def make_opts():
    from lenslab.figures.logit_lens import ViewOptions

    return ViewOptions()


def test_patching_and_attribution_use_the_layer_numbering(adapter):
    patch = run_patching(adapter, PATCH, parse_config({"mode": "pairs", "window": 2}),
                         progress=False)  # fmt: skip
    fig, _ = plot_heatmaps(patch, model="tiny")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == [str(b + 1) for b in range(adapter.n_layers)]  # block b -> layer b+1
    ld = pd.DataFrame({"component": ["embed", "attn 0", "mlp 3", "L2H1", "attn 1 bias"],
                       "kind": ["embed", "attn", "mlp", "head", "attn_bias"],
                       "layer": [-1, 0, 3, 2, 1], "head": [-1, -1, -1, 1, -1]})  # fmt: skip
    out = layer_names(ld)
    assert out["component"].tolist() == ["embed", "attn 1", "mlp 4", "L3H1", "attn 2 bias"]
    it = pd.DataFrame({"prompt_id": "p", "block": [0, 0, 1, 1], "position": [0, 1, 0, 1],
                       "token": "w", "cosine": [0.1, 0.3, -0.2, 0.0]})  # fmt: skip
    fig, caption = plot_iterative(it, "tiny")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2"]
    assert "resid[l] − resid[l−1]" in fig.axes[0].get_xlabel() and "layers 1..2" in caption


# -- interactive views --------------------------------------------------------------------------
def test_lens_hover_lists_the_tables_top_k(lens_table):
    table, _, _ = lens_table
    views = lens_views("F2", table, {}, LensConfig())["views"]
    heat = views[0]["data"][0]
    view = prompt_view(table, make_opts(), "logit")
    layers = pick_layers(view["layer"].unique().tolist())
    row = view[(view.layer == layers[1]) & (view.position == 7)].iloc[0]
    hover = heat["customdata"][1][7]
    for k in range(1, 6):
        assert f"{k}. {row[f'top{k}_token']!r} {row[f'top{k}_prob']:.3f}" in hover
    assert len(heat["z"][0]) == 26 and heat["text"][1][7] == row["top1_token"]
    assert heat["z"][1][7] == pytest.approx(row["top1_logit"], rel=1e-3)
    f5 = lens_views("F5", table, {}, LensConfig())["views"]
    assert len(f5) == 2 and f5[1]["data"][0]["text"][0][0].isdigit()  # ranks printed


def test_visibility_view_holds_every_cell(adapter):
    vis = visibility_table(adapter, {"name": "v", "prompts": [{"id": "v", "text": "w1 w2 w3"}]})
    view = visibility_view(vis, (2, 1), "t")
    s, t = view["shape"]
    assert (s, t) == (adapter.n_layers + 1, 3) and len(view["values"]) == (s * t) ** 2
    row = vis[
        (vis.query_layer == 3) & (vis.query_pos == 2) & (vis.layer == 1) & (vis.position == 0)
    ]
    flat = ((3 * t + 2) * s + 1) * t + 0
    assert view["values"][flat] == pytest.approx(float(row["value"].iloc[0]), rel=1e-2)


# -- the page -----------------------------------------------------------------------------------
def test_report_page_structure(report):
    page = report.read_text()
    for stem in ("F2_tiny_dev", "F3_tiny_dev", "F4_tiny_dev", "F5_tiny_dev", "F13_tiny_toy",
                 "F15_tiny_v", "F10_tiny_dev"):  # fmt: skip
        assert f'<section id="{stem}"' in page
    assert "F10 skipped for model tiny: fidelity gate failed" in page
    assert page.count("<script>") == 2  # plotly.js once, the render script once
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", page)  # offline: nothing fetched
    assert 'href="lens/tiny/dev/logit.parquet"' in page  # data link, relative to the page
    assert "findings.parquet" in page and "<td>a &lt; b</td>" in page  # extra table
    assert html.escape('"torch": "2.13.0') in page and "git commit" in page  # provenance
    assert LAYER_NOTE.split(";")[0] in page
    assert str(report.parent) not in page  # no absolute paths


def test_report_is_byte_identical_on_rebuild(report, tmp_path):
    sidecars = sorted((report.parent / "figures").glob("*.json"))
    out = report.parent / "again.html"
    build_report(sidecars, out, {"name": "synthetic"}, {"config": {"lens": {"topk": 5}}},
                 tables=[report.parent / "findings.parquet"], prov=provenance())  # fmt: skip
    assert out.read_bytes() == report.read_bytes()
    out.unlink()


def test_sidecar_skipped_key(report):
    meta = read_json(report.parent / "figures/F10_tiny_dev.json")
    assert meta["skipped"] == "fidelity gate failed" and meta["figure"] == "F10"


# -- a real browser -----------------------------------------------------------------------------
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1400,1000"]  # fmt: skip


def _browser(tmp_path: Path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "headless Chromium is not installed (needs Debian's chromium and chromium-driver: "
            "run .ci/install-browser.sh as root)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _hover_cell(driver, div_id: str, col: int, row: int) -> None:
    """Move the real mouse pointer over cell (col, row) of a heatmap view."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();", div_id)
    x, y = driver.execute_script(
        """var gd = document.getElementById(arguments[0]), fl = gd._fullLayout;
        var r = gd.getBoundingClientRect();
        return [r.left + fl.xaxis._offset + fl.xaxis.l2p(arguments[1]),
                r.top + fl.yaxis._offset + fl.yaxis.l2p(arguments[2])];""",
        div_id, col, row,
    )  # fmt: skip
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(x), int(y))
    actions.perform()


@pytest.mark.slow
def test_report_in_headless_chromium(report, lens_table, tmp_path):
    driver = _browser(tmp_path)
    try:
        driver.get(report.as_uri())
        sections = driver.find_elements("css selector", "section.figure")
        assert len(sections) == 7
        n_views = sum(
            len(read_json(f).get("interactive", {}).get("views", []))
            for f in (report.parent / "figures").glob("*.json")
        )
        assert n_views == 9  # F2-F4, F5's two panels, F13's three kinds, F15
        assert driver.execute_script("return document.body.dataset.viewsRendered") == str(n_views)
        drawn = driver.execute_script(
            "return [...document.querySelectorAll('div.view')].filter(d => d.dataset.rendered"
            " === '1' && d.querySelector('svg.main-svg .heatmaplayer image, svg.main-svg "
            ".heatmaplayer')).length;"
        )
        assert drawn == n_views  # plotly drew a heatmap in every view
        images = driver.execute_script(
            "return [...document.images].map(i => i.complete && i.naturalWidth > 0);"
        )
        assert images and all(images)  # every static figure loads
        note = driver.find_element("css selector", "#F10_tiny_dev .skipped").text
        assert note == "F10 skipped for model tiny: fidelity gate failed"
        # Hover an F2 cell: its label lists the cell's top-k tokens and probabilities.
        table, _, _ = lens_table
        view = prompt_view(table, make_opts(), "logit")
        layers = pick_layers(view["layer"].unique().tolist())
        _hover_cell(driver, "F2_tiny_dev-view0", 7, 1)
        label = driver.execute_script(
            "return document.querySelector('#F2_tiny_dev-view0 .hoverlayer').textContent;"
        )
        cell = view[(view.layer == layers[1]) & (view.position == 7)].iloc[0]
        assert f"layer {layers[1]}, position 7" in label
        for k in range(1, 6):
            assert f"{k}. {cell[f'top{k}_token']!r} {cell[f'top{k}_prob']:.3f}" in label
        # F15: hovering a cell makes it the query.
        _hover_cell(driver, "F15_tiny_v-view0", 1, 2)
        query = driver.execute_script(
            "return document.getElementById('F15_tiny_v-view0').dataset.query;"
        )
        assert query == "2,1"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        offsite = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => !n.startsWith('file:'));"
        )
        assert offsite == []
    finally:
        driver.quit()


def test_sidecar_json_is_compact(report):
    text = (report.parent / "figures/F15_tiny_v.json").read_text()
    assert "\n" not in text.strip() and json.loads(text)["interactive"]["views"][0]["kind"] == (
        "visibility"
    )
