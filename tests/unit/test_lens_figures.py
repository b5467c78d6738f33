"""F2-F6 and F17: the data each figure shows, option handling, and that files + captions appear."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lenslab.errors import LensLabError
from lenslab.extract import extract
from lenslab.figures.distances import (
    distance_data,
    make_distances,
    normalised,
    parse_distance_options,
)
from lenslab.figures.logit_lens import (
    GAP,
    ViewOptions,
    copy_positions,
    grid,
    kl_norm,
    make_view,
    parse_view_options,
    percentile_norm,
    pick_layers,
    pick_positions,
    prompt_view,
    visible,
)
from lenslab.figures.save import save_figure
from lenslab.io import read_json
from lenslab.lenses.logit import LogitLens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.prompts import encode_set
from lenslab.stats.aggregate import layer_means
from lenslab.stats.config import LensConfig
from lenslab.stats.lens_stats import apply_lens

PROMPTS = {
    "name": "dev",
    "prompts": [
        {"id": "copy", "text": "w1 w9 w2 w3 w4 w5 w6 w7 w8 w10 w11 w12 w9", "answer": "w9"},
        {"id": "other", "text": "w3 w4 w5 w6", "targets": ["w2"]},
    ],
}


@pytest.fixture(scope="module")
def tables():
    adapter = ModelAdapter(build_tiny("gpt2", n_layer=4), tiny_tokenizer(), name="tiny")
    prompts = encode_set(adapter.tokenizer, PROMPTS)
    acts = extract(adapter, prompts, batch_size=2, progress=False)
    table, tracked = apply_lens(LogitLens(adapter), acts, prompts, LensConfig(), lens_name="logit")
    return table, tracked, layer_means(table)


def test_visible_whitespace_and_cut():
    assert visible(" the") == "·the"
    assert visible("\n") == "⏎" and visible("a\tb") == "a⇥b"
    assert visible("") == "∅"
    assert visible(" extraordinary", 8) == "·extrao…"


def test_pick_layers_every_other_for_deep_models():
    assert pick_layers(list(range(13))) == list(range(12, -1, -1))
    deep = pick_layers(list(range(49)))
    assert deep == list(range(48, -1, -2)) and len(deep) == 25
    assert pick_layers(list(range(6)), 2) == [5, 4, 2, 0]  # the output is always shown


def test_pick_positions_windows():
    assert pick_positions(30, ViewOptions()) == list(range(10, 30))
    assert pick_positions(5, ViewOptions()) == list(range(5))
    assert pick_positions(30, ViewOptions(start=3, max_positions=4)) == [3, 4, 5, 6]
    assert pick_positions(30, ViewOptions(positions=[7, 2])) == [7, 2]
    with pytest.raises(LensLabError, match="outside"):
        pick_positions(5, ViewOptions(positions=[9]))
    with pytest.raises(LensLabError, match="unknown figure option"):
        parse_view_options({"max_position": 3})
    with pytest.raises(LensLabError, match="layer_step"):
        parse_view_options({"layer_step": 0})


def test_grid_holds_the_table_cells(tables):
    table, _, _ = tables
    view = prompt_view(table, ViewOptions(), "logit")
    assert view.prompt_id.unique().tolist() == ["copy"]
    layers, positions = pick_layers(view.layer.unique().tolist()), [0, 3, 12]
    g = grid(view, "top1_logit", layers, positions)
    cell = view[(view.layer == layers[1]) & (view.position == 3)].iloc[0]
    assert g.values[1, 1] == cell.top1_logit and g.text[1][1] == visible(cell.top1_token)
    assert g.outline[0].all()  # the output row's top-1 is the final top-1 by definition
    np.testing.assert_array_equal(
        g.outline, [[(view[(view.layer == r) & (view.position == p)].top1_id.iloc[0]
                      == view[(view.layer == r) & (view.position == p)].final_top1_id.iloc[0])
                     for p in positions] for r in layers]
    )  # fmt: skip
    first = view[view.layer == 0].set_index("position")
    assert g.marks.tolist() == [
        bool(first.final_top1_id[p] == first.next_token_id[p]) for p in positions
    ]
    assert g.xlabels == ["w1", "w3", "w9"] and g.toplabels == ["w9", "w4", ""]
    other = prompt_view(table, ViewOptions(prompt="other"), "logit")
    assert prompt_view(table, ViewOptions(prompt=1), "logit").equals(other)
    with pytest.raises(LensLabError, match="not in the prompt set"):
        prompt_view(table, ViewOptions(prompt="nope"), "logit")
    with pytest.raises(LensLabError, match="lens 'tuned' is not in the table"):
        prompt_view(table, ViewOptions(), "tuned")


def test_copy_windows_around_each_occurrence(tables):
    table, _, _ = tables
    view = prompt_view(table, ViewOptions(), "logit")
    w9 = int(view[view.position == 1].token_id.iloc[0])
    assert copy_positions(view, w9, 2) == [0, 1, 2, 3, GAP, 10, 11, 12]
    assert copy_positions(view, w9, 5) == list(range(13))  # windows merge


def test_colour_scales():
    values = np.arange(101, dtype=float)
    norm = percentile_norm(values, [5, 95])
    assert (norm.vmin, norm.vmax) == (5.0, 95.0)
    assert kl_norm(values, 30.0).vmax == 30.0
    assert kl_norm(np.array([0.0, 0.12, 0.31]), None).vmax == pytest.approx(0.3)


@pytest.mark.parametrize("fid", ["F2", "F3", "F4", "F5", "F6"])
def test_views_are_saved_with_conventions(tables, tmp_path, fid):
    table, tracked, means = tables
    fig, title, caption = make_view(fid, table, tracked, means, {"window": 2}, LensConfig())
    png = tmp_path / f"{fid}_tiny_dev.png"
    save_figure(fig, png, title, caption)
    assert png.stat().st_size > 5000 and png.with_suffix(".svg").exists()
    side = read_json(png.with_suffix(".json"))
    assert side["figure"] == fid and "full final norm" in side["caption"]
    if fid in ("F4", "F5"):
        assert "natural log" in caption and "no probability clipping" in caption
    if fid == "F2":
        assert "5th-95th percentile" in caption
    if fid in ("F3", "F5", "F6"):
        assert "log" in caption and "1-based rank" in caption
    if fid == "F6":
        assert "'w9'" in caption


def test_f6_needs_an_answer(tables):
    table, tracked, means = tables
    with pytest.raises(LensLabError, match="no answer word"):
        make_view("F6", table, tracked, means, {"prompt": "other"}, LensConfig())


def test_distance_data_and_rescaling(tables):
    table, _, means = tables
    data = distance_data(means, parse_distance_options({}))
    assert set(data.metric) == {"kl_final", "rev_kl_final", "js_final", "mse_logits", "cos_final",
                                "agree_top1"}  # fmt: skip
    kl = data[data.metric == "kl_final"].set_index("layer")["mean"]
    np.testing.assert_allclose(kl.to_numpy(), table.groupby("layer").kl_final.mean().to_numpy())
    scaled = normalised(data).set_index(["metric", "layer"])["scaled"]
    last = table.layer.max()
    for metric in ("kl_final", "js_final", "cos_final", "agree_top1"):
        assert scaled[metric].max() == pytest.approx(1.0)
        if metric != "js_final":  # JS of a random tiny model is ~1e-4: rounding shows in ratios
            assert scaled[(metric, last)] == pytest.approx(0.0, abs=1e-5)  # the output is at 0
    assert data.set_index(["metric", "layer"])["mean"][("js_final", last)] < 1e-6
    with pytest.raises(LensLabError, match="unknown F17 metric"):
        parse_distance_options({"metrics": ["kl"]})
    with pytest.raises(LensLabError, match="were not applied"):
        distance_data(means, parse_distance_options({"lenses": ["tuned"]}))


def test_f17_two_lenses(tables, tmp_path):
    table, _, _ = tables
    both = pd.concat([table, table.assign(lens="logit_noaffine", kl_final=table.kl_final * 2)])
    fig, title, caption = make_distances(layer_means(both), {}, LensConfig(clip_probs=True), 2)
    save_figure(fig, tmp_path / "F17_tiny_dev.png", title, caption)
    assert "clipped at 1/(10V)" in caption and "natural log" in caption
    assert "logit_noaffine" in title and (tmp_path / "F17_tiny_dev.svg").exists()
