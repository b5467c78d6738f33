"""Direct logit attribution (F10): completeness, agreement with the residual stream, heads."""

from __future__ import annotations

import pytest
import torch

from lenslab.attribution.dla import direct_logit_attribution, dla_table
from lenslab.errors import LensLabError
from lenslab.figures.dla import logit_differences, plot_dla
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import TINY_CONFIGS, build_tiny, tiny_tokenizer

IDS = [5, 17, 3, 42, 8, 23]
TOKENS = {"a": 4, "b": 9, "c": 77}
WHOLE = ["embed", "attn", "mlp", "bias"]


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_terms_sum_to_the_models_logits(arch):
    adapter = ModelAdapter(build_tiny(arch, seed=1))
    table = direct_logit_attribution(adapter, IDS, TOKENS, heads=True)
    with torch.no_grad():
        logits = adapter.model(torch.tensor([IDS])).logits[0, -1]
    sums = table[table["kind"].isin(WHOLE)].groupby("token")["value"].sum()
    for label, tid in TOKENS.items():
        assert sums[label] == pytest.approx(float(logits[tid]), abs=1e-4), (arch, label)
    # the heads and the projection bias add up to each block's attention term
    split = table[table["kind"].isin(["head", "attn_bias"])].groupby(["layer", "token"])["value"]
    attn = table[table["kind"] == "attn"].set_index(["layer", "token"])["value"]
    torch.testing.assert_close(
        torch.tensor(split.sum().sort_index().to_numpy()),
        torch.tensor(attn.sort_index().to_numpy()),
        atol=1e-4,
        rtol=1e-4,
    )


def test_last_block_terms_match_the_residual_stream_difference():
    """Independent computation: resid[L] - resid[L-1] through the frozen final norm."""
    adapter = ModelAdapter(build_tiny("gpt2", seed=2))
    table = direct_logit_attribution(adapter, IDS, TOKENS)
    _, resid = adapter.run_with_resid(torch.tensor([IDS]))
    final, before = resid[-1, 0, -1], resid[-2, 0, -1]
    norm = adapter.final_norm
    scale = norm.weight / torch.sqrt(final.var(unbiased=False) + norm.eps)
    delta = final - before
    u = adapter.unembed.weight[list(TOKENS.values())]
    expected = u @ (scale * (delta - delta.mean()))
    last = adapter.n_layers - 1
    got = table[table["layer"] == last].groupby("token", sort=False)["value"].sum()
    torch.testing.assert_close(
        torch.tensor(got[list(TOKENS)].to_numpy()), expected.detach().double(), atol=1e-4, rtol=0
    )


def test_silenced_blocks_contribute_nothing():
    """Known answer: with every attention and MLP output projection zeroed, the logit is the
    embeddings' term plus the bias term, and every block term is exactly 0."""
    model = build_tiny("gpt2", seed=3)
    with torch.no_grad():
        for block in model.transformer.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    table = direct_logit_attribution(ModelAdapter(model), IDS, TOKENS, heads=True)
    blocks = table[table["kind"].isin(["attn", "mlp", "head", "attn_bias"])]
    assert (blocks["value"] == 0).all()
    assert set(table[table["value"] != 0]["kind"]) <= {"embed", "bias"}


def test_projection_before_unembedding_is_folded_into_the_unembedding():
    model = build_tiny("opt", seed=0, word_embed_proj_dim=16)  # OPT-350m style project_out
    adapter = ModelAdapter(model)
    assert adapter.post_norm is not None
    table = direct_logit_attribution(adapter, IDS, TOKENS)
    with torch.no_grad():
        logits = adapter.forward(torch.tensor([IDS]))[0, -1]
    whole = table[table["kind"].isin(["embed", "attn", "mlp", "bias"])]
    sums = whole.groupby("token")["value"].sum()
    for label, tid in TOKENS.items():
        assert abs(sums[label] - float(logits[tid])) < 1e-4


def test_soft_capped_logits_are_refused_by_the_gate():
    adapter = ModelAdapter(build_tiny("gemma2"), name="g2")
    with pytest.raises(LensLabError, match="'linear_head'.*soft-capped.*rules out dla"):
        direct_logit_attribution(adapter, IDS, TOKENS)


def _prompt_set():
    return {
        "name": "toy",
        "prompts": [
            {"id": "p1", "text": "w1 w2 w3 w4", "answer": "w5", "targets": ["w5", "w6"]},
            {"id": "p2", "text": "w7 w8 w9 w10", "answer": "w11", "targets": ["w12"]},
            {"id": "p3", "text": "w13 w14"},
        ],
    }


def test_table_and_logit_differences_add_up():
    tok = tiny_tokenizer()
    adapter = ModelAdapter(build_tiny("gpt2", seed=4), tok)
    table = dla_table(adapter, _prompt_set())
    assert list(dict.fromkeys(table["prompt_id"])) == ["p1", "p2"]  # p3 has no answer
    ld = logit_differences(table)
    whole = ld[ld["kind"].isin(WHOLE)].groupby("prompt_id")["ld"].sum()
    assert set(ld["counterfactual"]) == {"w6", "w12"}
    for pid, text, answer, other in (
        ("p1", "w1 w2 w3 w4", "w5", "w6"),
        ("p2", "w7 w8 w9 w10", "w11", "w12"),
    ):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        with torch.no_grad():
            logits = adapter.model(torch.tensor([ids])).logits[0, -1]
        a, b = tok.convert_tokens_to_ids([answer, other])
        expected = float(logits[a] - logits[b])
        assert abs(expected) > 1e-3  # a real difference, not 0 == 0
        assert whole[pid] == pytest.approx(expected, abs=1e-4)
    fig, caption = plot_dla(table, "tiny")
    assert "2 prompts" in caption and len(fig.axes) == 3  # bars, heads, colour bar


def test_prompt_set_without_answers_is_a_clear_error():
    adapter = ModelAdapter(build_tiny("gpt2"), tiny_tokenizer())
    with pytest.raises(LensLabError, match="no prompt with an `answer`"):
        dla_table(adapter, {"name": "bare", "prompts": [{"id": "x", "text": "w1 w2"}]})
