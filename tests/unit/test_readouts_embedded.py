"""Patchscopes and the attribute lens on the trained embedded model: the seed-002 findings,
asserted with margins meant to hold across seeds and machines (not tuned to one run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lenslab.gate import load_model
from lenslab.lenses.logit import LogitLens
from lenslab.patchscopes.config import EntityOptions, IdentityOptions, run_entities, run_identity
from lenslab.patchscopes.experiments import precision_by_layer
from lenslab.relations import AttributeOptions, run_attribute

CONF = Path(__file__).resolve().parents[2] / "conf"
pytestmark = pytest.mark.slow


def _study_options(fid: str) -> dict:
    study = OmegaConf.load(CONF / "study" / "default.yaml")
    return OmegaConf.to_container(study.study.figures[fid].options)


def _prompts(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "prompts" / f"{name}.yaml"))


@pytest.fixture(scope="module")
def adapter(embedded_test_dir):
    return load_model(
        {"name": "embedded-test", "source": str(embedded_test_dir)}, embedded_test_dir
    )


def test_token_identity_patchscope_beats_the_logit_lens_early(adapter) -> None:
    """The paper's headline: at early layers the patchscope reads the source's next token
    better than the logit lens; at the last layer both are exact."""
    opts = IdentityOptions(**{**_study_options("F11"), "cross_layer": False})
    table = run_identity(adapter, _prompts("embedded_text"), opts, {"logit": LogitLens(adapter)})
    prec = precision_by_layer(table).pivot_table(
        index="layer", columns="method", values="precision"
    )
    n = adapter.n_layers
    assert prec.loc[n, "patchscope"] == 1.0 and prec.loc[n, "logit"] == 1.0
    early = range(1, n // 2 + 1)
    gain = float((prec.loc[early, "patchscope"] - prec.loc[early, "logit"]).mean())
    assert gain > 0.1, prec


def test_entity_resolution_names_the_country_at_some_layer(adapter) -> None:
    opts = EntityOptions(**_study_options("F12"))
    table = run_entities(adapter, _prompts("embedded_entities"), opts)
    resolved = table.groupby("source_id")["resolved"].any()
    # The bare capitals and languages: their descriptions name the country.
    assert resolved[["paris", "berlin", "french", "greek"]].all(), table
    assert resolved.mean() >= 0.5


def test_attribute_lens_capital_is_faithful_at_middle_blocks(adapter) -> None:
    opts = AttributeOptions(**{k: v for k, v in _study_options("F9").items() if k != "view_text"})
    _, _, summary, _ = run_attribute(adapter, _prompts("embedded_relations"), opts)
    cap = summary[summary["relation"] == "capital"].set_index("layer")
    assert cap["n_correct"].min() >= 25  # the model answers most of the 35 evaluation prompts
    middle = cap.loc[1 : adapter.n_layers - 1, "recall"]
    # Seeds differ a lot here (best middle block 1.00 for seed 0, 0.11 for seed 1 of the current
    # recipe), so the margin is 3 hits where chance (1 in 35 capitals) expects one.
    chance = 1 / 35
    assert middle.max() >= 3 * chance, cap
