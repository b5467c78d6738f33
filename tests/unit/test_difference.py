"""F1: hidden-state differences against a direct computation and causal-attention zeros."""

import pytest
import torch

from lenslab.difference import pair_difference, state_names, with_final_norm
from lenslab.errors import LensLabError
from lenslab.extract import extract
from lenslab.prompts import encode_prompt


def _pair(adapter, a="w1 w2 w3 w9 w5", b="w1 w2 w3 w7 w5"):
    pa = encode_prompt(adapter.tokenizer, {"id": "a", "text": a})
    pb = encode_prompt(adapter.tokenizer, {"id": "b", "text": b})
    acts = extract(adapter, [pa, pb], progress=False)
    states = [with_final_norm(r, adapter.normalize) for r in acts.resid]
    return pa, pb, states


def test_matches_the_seed_computation(tiny_adapter):
    pa, pb, (sa, sb) = _pair(tiny_adapter)
    table = pair_difference(pa, pb, sa, sb)
    # Seed 000's loop over HF hidden states, computed independently here.
    with torch.no_grad():
        ha = tiny_adapter.model(torch.tensor([pa.input_ids]), output_hidden_states=True)
        hb = tiny_adapter.model(torch.tensor([pb.input_ids]), output_hidden_states=True)
    hf_rows = [row for row in range(tiny_adapter.n_layers + 2) if row != tiny_adapter.n_layers]
    for hf_index, row in enumerate(hf_rows):
        diff = ha.hidden_states[hf_index][0] - hb.hidden_states[hf_index][0]
        got = table[table.row == row].sort_values("position")
        torch.testing.assert_close(
            torch.tensor(got.l2.values, dtype=torch.float32),
            diff.norm(dim=-1),
            atol=1e-4,
            rtol=1e-4,
        )
        torch.testing.assert_close(
            torch.tensor(got["mean"].values, dtype=torch.float32),
            diff.mean(-1),
            atol=1e-5,
            rtol=1e-3,
        )
        torch.testing.assert_close(
            torch.tensor(got["std"].values, dtype=torch.float32), diff.std(-1), atol=1e-4, rtol=1e-3
        )


def test_identical_prefix_is_exactly_zero(tiny_adapter):
    pa, pb, (sa, sb) = _pair(tiny_adapter)
    table = pair_difference(pa, pb, sa, sb)
    assert (table[table.position < 3].l2 == 0).all()
    assert (table[(table.position >= 3) & (table.row > 0)].l2 > 0).all()
    # At the embeddings only the changed token differs.
    emb = table[table.row == 0].sort_values("position").l2.tolist()
    assert emb[3] > 0 and emb[4] == 0


def test_rows_and_labels(gpt2_adapter):
    pa, pb, (sa, sb) = _pair(gpt2_adapter)
    table = pair_difference(pa, pb, sa, sb)
    assert table.drop_duplicates("row").state.tolist() == state_names(3)
    assert state_names(3) == ["embed", "block 1", "block 2", "block 3", "final norm"]
    assert table.iloc[3][["clean_token", "corrupt_token"]].tolist() == ["w9", "w7"]


def test_unequal_lengths_need_an_alignment_rule(gpt2_adapter):
    pa, pb, (sa, sb) = _pair(gpt2_adapter, b="w1 w2 w3 w7 w5 w6")
    with pytest.raises(LensLabError, match="do not align"):
        pair_difference(pa, pb, sa, sb)
    left = pair_difference(pa, pb, sa, sb, align="left")
    assert left.position.max() == 4
