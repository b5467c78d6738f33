"""Every (family x method) cell is correct to fp32 tolerance or a clear refusal by the fidelity
gate; never a silently wrong value, never a crash. The committed table is current."""

from pathlib import Path

import pytest

from lenslab.gate.families import FAMILIES, TABLE_METHODS, markdown, measure_all

DOC = Path(__file__).resolve().parents[2] / "docs" / "families.md"
# Refusals the math requires (anything else refused would be a regression).
EXPECTED_REFUSALS = {
    ("gemma2", "dla"): "linear_head",  # tanh soft-capped logits
    ("opt_350m", "dla"): "sublayer_sum",  # post-LN: renormalised inside every block
    ("opt_350m", "patch_attn"): "sublayer_sum",
    ("opt_350m", "patch_mlp"): "sublayer_sum",
    # Updates that are not attention + MLP: Falcon-H1's parallel mamba and multipliers, Gemma
    # 4's per-layer input, MiniMax's residual taken after the input norm.
    **{
        (fam, m): "sublayer_sum"
        for fam in ("falcon_h1", "gemma4", "minimax")
        for m in ("dla", "patch_attn", "patch_mlp")
    },
    # Gemma 4's per-layer inputs and shared K/V: restoring the residual at a layer does not
    # restore what later blocks read (the gate's resid_complete).
    ("gemma4", "patch_resid"): "resid_complete",
    # Gemma 3n's AltUp stream axis: refused at load, every method and the runner.
    **{("gemma3n", m): "AltUp's extra state axis is not supported" for m in TABLE_METHODS},
    ("gemma3n", "runner"): "at load",
}
# Replaying captured block arguments is wrong on patched runs: Bloom's ALiBi bias (one batch
# size), Gemma 4's per-layer inputs and shared K/V (the clean prompt's).
FULL_RUNNER = {"bloom", "gemma4"}


@pytest.fixture(scope="module")
def table():
    return measure_all()


def test_every_cell_is_right_or_refused_by_name(table):
    assert set(table) == set(FAMILIES)
    defects = {
        (fam, m): (c.status, c.error, c.detail)
        for fam, cells in table.items()
        for m, c in cells.items()
        if c.status not in ("ok", "refused", "info")
    }
    assert not defects


def test_refusals_are_exactly_the_expected_ones(table):
    refused = {
        (fam, m): c.detail
        for fam, cells in table.items()
        for m, c in cells.items()
        if c.status == "refused"
    }
    runners = {fam: cells["runner"].detail for fam, cells in table.items()}
    assert {f for f, r in runners.items() if r == "full"} == FULL_RUNNER
    assert refused == EXPECTED_REFUSALS


def test_at_least_the_families_the_issue_asks_for():
    wanted = {
        *("gpt_neo", "gpt_bigcode", "bloom", "falcon", "mpt", "phi", "stablelm", "starcoder2"),
        *("gemma3", "olmo2", "cohere", "granite", "mixtral", "qwen2_moe", "qwen3_moe"),
        *("deepseek_v3", "gpt_oss", "llama4"),
        *("qwen3_next", "qwen3_5", "lfm2", "jamba", "falcon_h1", "gemma4", "gemma3n"),
    }
    assert wanted <= set(FAMILIES)
    assert len(TABLE_METHODS) == 8


def test_committed_table_is_current(table):
    assert DOC.read_text() == markdown(table), (
        "docs/families.md is stale: run `python -m lenslab.gate.families --markdown "
        "docs/families.md`"
    )
