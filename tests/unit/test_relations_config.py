"""Relation prompt-set files match their generator; the F9/F11/F12/F16c glue on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lenslab.errors import LensLabError
from lenslab.lenses.logit import LogitLens
from lenslab.lookahead import BeamOptions, run_beam
from lenslab.patchscopes.config import (
    EntityOptions,
    IdentityOptions,
    parse_options,
    run_entities,
    run_identity,
)
from lenslab.relations import AttributeOptions, run_attribute, world_relation_prompts

CONF = Path(__file__).resolve().parents[2] / "conf" / "prompts"


@pytest.mark.parametrize(
    ("name", "relations"),
    [("embedded_relations", ["capital", "language", "currency", "continent"]),
     ("capital_relation", ["capital"])],
)  # fmt: skip
def test_relation_files_match_the_generator(name: str, relations: list[str]) -> None:
    loaded = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=True)
    assert loaded["prompts"] == world_relation_prompts(relations)


def _set(prompts: list[dict]) -> dict:
    return {"name": "t", "prompts": prompts, "pairs": []}


def test_attribute_glue_on_a_tiny_model(gpt2_adapter) -> None:
    prompts = [
        {"id": f"r.{i}", "text": f"w1 w{i} w2", "subject": f"w{i}", "answer": f"w{i + 20}"}
        for i in range(3, 11)
    ]
    opts = parse_options(AttributeOptions, {"n_train": 5, "beta": {"r": 2.0}})
    lenses, table, summary, view = run_attribute(gpt2_adapter, _set(prompts), opts)
    assert lenses[0].beta == 2.0 and lenses[0].n_prompts == 5
    assert sorted(table["prompt_id"].unique()) == ["r.10", "r.8", "r.9"]  # only evaluation prompts
    assert len(summary) == gpt2_adapter.n_layers + 1
    assert len(view) == (gpt2_adapter.n_layers + 1) * 3  # the first evaluation prompt
    with pytest.raises(LensLabError, match="beta given"):
        run_attribute(gpt2_adapter, _set(prompts), AttributeOptions(beta={"x": 1.0}))
    with pytest.raises(LensLabError, match="not a relation prompt"):
        run_attribute(gpt2_adapter, _set([{"id": "r1", "text": "w1"}]), opts)


def test_patchscope_and_beam_glue_on_a_tiny_model(gpt2_adapter) -> None:
    pset = _set([{"id": "a", "text": "w1 w2 w3 w4"}, {"id": "b", "text": "w5 w6", "subject": "w5",
                                                       "answer": "w7"}])  # fmt: skip
    ident = run_identity(gpt2_adapter, pset, IdentityOptions(target="w9 w9 w8 w8 w7"), {})
    n = gpt2_adapter.n_layers + 1
    assert len(ident) == (4 + 2) * n * n  # cross-layer pairs by default
    ents = run_entities(gpt2_adapter, pset, EntityOptions(target="w9 w10 w11", max_new_tokens=3))
    assert len(ents) == 2 * n and set(ents["answer"]) == {"", "w7"}
    beams = run_beam(LogitLens(gpt2_adapter), pset, BeamOptions(prompt="b", positions=[-1]))
    assert set(beams["prompt_id"]) == {"b"} and len(beams) == n * 5
    with pytest.raises(LensLabError, match="unknown figure option"):
        parse_options(IdentityOptions, {"taget": "x"})
    with pytest.raises(LensLabError, match="not in the prompt set"):
        run_beam(LogitLens(gpt2_adapter), pset, BeamOptions(prompt="zz"))


def test_figures_draw_from_the_tables(gpt2_adapter, tmp_path) -> None:
    """F9, F11, F12 and F16c draw from their tables and state their conventions."""
    from lenslab.figures.attribute import plot_attribute
    from lenslab.figures.lookahead import plot_beam
    from lenslab.figures.patchscopes import plot_entities, plot_token_identity
    from lenslab.figures.save import save_figure

    pset = _set([{"id": "a", "text": "w1 w2 w3 w4", "subject": "w3", "answer": "w7"}])
    lenses = {"logit": LogitLens(gpt2_adapter)}
    ident = run_identity(gpt2_adapter, pset, IdentityOptions(target="w9 w9 w8"), lenses)
    fig, caption = plot_token_identity(ident, "tiny", "w9 w9 w8")
    assert "precision@1" in caption and "final norm" in caption
    save_figure(fig, tmp_path / "F11.png", "F11", caption)
    ents = run_entities(gpt2_adapter, pset, EntityOptions(target="w9 w10", max_new_tokens=2))
    fig, caption = plot_entities(ents, "tiny", "w9 w10")
    assert "l* = l" in caption
    save_figure(fig, tmp_path / "F12.png", "F12", caption)
    rel = [{"id": f"r.{i}", "text": f"w1 w{i} w2", "subject": f"w{i}", "answer": "w5"}
           for i in range(3, 9)]  # fmt: skip
    _, _, summary, view = run_attribute(gpt2_adapter, _set(rel), AttributeOptions())
    fig, caption = plot_attribute(summary, view, "tiny", {}, "r", 5)
    assert "Wilson" in caption and "final norm" in caption
    save_figure(fig, tmp_path / "F9.png", "F9", caption)
    beams = run_beam(LogitLens(gpt2_adapter), pset, BeamOptions(positions=[-1], depth=2))
    fig, caption = plot_beam(beams, "tiny", "logit", 5, 2)
    save_figure(fig, tmp_path / "F16c.png", "F16c", caption)
    assert (tmp_path / "F16c.svg").exists() and (tmp_path / "F9.json").exists()
