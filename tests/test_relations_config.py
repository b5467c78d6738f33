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

CONF = Path(__file__).resolve().parents[1] / "conf" / "prompts"


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
