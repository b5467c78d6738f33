"""F16 beam over a lens and Wendler et al.'s prefix-summed word probability."""

from __future__ import annotations

import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.lenses.logit import LogitLens
from lenslab.lookahead import beam_table, lens_beam, prefix_prob, prefix_token_ids
from lenslab.models.tiny import tiny_tokenizer

IDS = [5, 9, 12, 7, 30, 18]


def test_beam_at_the_output_is_the_model_top_k(gpt2_adapter) -> None:
    lens = LogitLens(gpt2_adapter)
    logp = torch.log_softmax(gpt2_adapter.forward(torch.tensor([IDS]))[0, 3], -1)
    beams = lens_beam(lens, IDS, gpt2_adapter.n_layers, position=3, width=4, depth=1)
    top = torch.topk(logp, 4)
    assert [b[0][0] for b in beams] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([b[1] for b in beams]), top.values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", [1, 3])
def test_full_width_beam_finds_the_best_two_token_reading(gpt2_adapter, layer: int) -> None:
    """Keeping every first token, the best beam of depth 2 is the brute-force optimum of
    lens logp(a at t) + lens logp(b after a), both read at ``layer``."""
    lens = LogitLens(gpt2_adapter)
    v = gpt2_adapter.vocab_size
    best = lens_beam(lens, IDS, layer, width=v, depth=2)[0]
    with torch.no_grad():
        _, resid = gpt2_adapter.run_with_resid(torch.tensor([IDS]))
        first = torch.log_softmax(lens.logits(resid[layer, 0, -1], layer), -1)
        seqs = torch.cat([torch.tensor([IDS]).expand(v, -1), torch.arange(v)[:, None]], 1)
        _, r2 = gpt2_adapter.run_with_resid(seqs)
        second = torch.log_softmax(lens.logits(r2[layer, :, -1], layer), -1)
    total = first[:, None] + second
    assert best[1] == pytest.approx(float(total.max()), abs=1e-4)
    a, b = divmod(int(total.argmax()), v)
    assert best[0] == [a, b]


def test_beam_table_is_deterministic(gpt2_adapter) -> None:
    lens = LogitLens(gpt2_adapter)
    t1 = beam_table(lens, "p", IDS, [2, -1], width=3, depth=2)
    t2 = beam_table(lens, "p", IDS, [2, -1], width=3, depth=2)
    assert t1.equals(t2)
    assert len(t1) == 2 * (gpt2_adapter.n_layers + 1) * 3
    assert (
        t1.groupby(["position", "layer"])["logprob"].apply(lambda s: s.is_monotonic_decreasing)
    ).all()
    with pytest.raises(LensLabError, match="outside the prompt"):
        lens_beam(lens, IDS, 1, position=10)
    with pytest.raises(LensLabError, match="outside the prompt"):
        beam_table(lens, "p", IDS, [10], width=3, depth=2)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "opt"])
def test_cached_beam_equals_rerunning_the_sequences(arch) -> None:
    """Beams extend the prompt's key/value cache; rerunning the whole sequences at every step
    (the reference) must find the same continuations with the same scores."""
    from lenslab.models.adapter import ModelAdapter
    from lenslab.models.tiny import build_tiny

    adapter = ModelAdapter(build_tiny(arch, seed=2), tiny_tokenizer(), name=arch)
    lens = LogitLens(adapter)
    for layer in (1, adapter.n_layers):
        for position in (-1, 3):
            cached = lens_beam(lens, IDS, layer, position, width=4, depth=3)
            rerun = lens_beam(lens, IDS, layer, position, width=4, depth=3, use_cache=False)
            assert [c for c, _ in cached] == [c for c, _ in rerun], (arch, layer, position)
            torch.testing.assert_close(
                torch.tensor([v for _, v in cached]),
                torch.tensor([v for _, v in rerun]),
                atol=1e-4,
                rtol=0,
            )


def test_beam_table_agrees_with_one_beam_at_a_time(gpt2_adapter) -> None:
    """The table shares each position's first forward across layers; every beam must still be
    what a separate search from that (layer, position) finds."""
    lens = LogitLens(gpt2_adapter)
    table = beam_table(lens, "p", IDS, [2, -1], width=3, depth=2)
    for (pos, layer), rows in table.groupby(["position", "layer"]):
        alone = lens_beam(lens, IDS, int(layer), int(pos), width=3, depth=2, use_cache=False)
        assert [list(c) for c in rows["tokens"]] == [c for c, _ in alone]
        torch.testing.assert_close(
            torch.tensor(rows["logprob"].tolist()),
            torch.tensor([lp for _, lp in alone]),
            atol=1e-4,
            rtol=0,
        )


def test_prefix_tokens_and_summed_probability() -> None:
    tok = tiny_tokenizer()
    ids = prefix_token_ids(tok, "w12", vocab_size=84)
    assert sorted(tok.decode([i]) for i in ids) == ["w1", "w12"]
    probs = torch.zeros(2, 84)
    probs[0, ids[0]], probs[0, ids[1]], probs[1, 50] = 0.2, 0.3, 1.0
    torch.testing.assert_close(prefix_prob(probs, ids), torch.tensor([0.5, 0.0]))
    with pytest.raises(LensLabError, match="no token"):
        prefix_token_ids(tok, "zebra", vocab_size=84)


def test_detour_table_sums_prefix_tokens(gpt2_adapter) -> None:
    from lenslab.lookahead import detour_table

    pset = {"prompts": [{"id": "p", "text": "w5 w9 w7", "answer": "w12", "targets": ["w3"]}]}
    table = detour_table(LogitLens(gpt2_adapter), pset)
    assert len(table) == (gpt2_adapter.n_layers + 1) * 2
    with torch.no_grad():
        probs = torch.softmax(gpt2_adapter.forward(torch.tensor([[9, 13, 11]]))[0, -1], -1)
    tok = tiny_tokenizer()
    w1, w12 = tok.convert_tokens_to_ids(["w1", "w12"])
    last = table[(table["layer"] == gpt2_adapter.n_layers) & (table["role"] == "answer")].iloc[0]
    assert last["n_prefix_tokens"] == 2
    assert last["prob"] == pytest.approx(float(probs[w1] + probs[w12]), abs=1e-6)
