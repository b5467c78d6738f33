"""Visibility (F15): causality, agreement with plain autograd, a hand-checked gradient."""

from __future__ import annotations

import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.figures.visibility import plot_visibility
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import TINY_CONFIGS, build_tiny, tiny_tokenizer
from lenslab.visibility import check_query, influence, query_scalar, visibility_table

IDS = [5, 17, 3, 42, 8, 23, 11]


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_no_influence_flows_backwards_in_time(arch):
    v = influence(ModelAdapter(build_tiny(arch, seed=1)), IDS)
    n_states, n_pos = v.shape[:2]
    for layer in range(n_states):
        for pos in range(n_pos):
            cell = v[layer, pos]
            assert (cell[:, pos + 1 :] == 0).all()  # later positions: exactly zero
            assert (cell[layer + 1 :] == 0).all()  # later layers: exactly zero
            assert (cell[:layer, : pos + 1] > 0).all()  # every earlier state has a say


def test_embedding_column_agrees_with_plain_autograd():
    """Independent computation: the influence on resid[0] is the gradient with respect to the
    input embeddings of an ordinary HF forward (positions are added after them)."""
    model = build_tiny("gpt2", seed=2)
    v = influence(ModelAdapter(model), IDS, normalise=False)
    emb = model.get_input_embeddings()(torch.tensor([IDS])).detach().requires_grad_(True)
    hidden = model(inputs_embeds=emb, output_hidden_states=True).hidden_states
    for layer in (1, 2):  # hidden_states[l] is resid[l] below the last (final-normed) one
        for pos in (0, 3, 6):
            scalar = query_scalar(hidden[layer][0, pos], False)
            (grad,) = torch.autograd.grad(scalar, emb, retain_graph=True)
            expected = grad[0].abs().sum(-1)
            torch.testing.assert_close(v[layer, pos, 0], expected, atol=1e-5, rtol=1e-5)


def test_a_state_on_itself_matches_the_hand_gradient():
    """d/dh sum|h/||h|||: sign(h)/||h|| - (sum|h|) h/||h||^3, summed in absolute value."""
    adapter = ModelAdapter(build_tiny("llama", seed=3))
    v = influence(adapter, IDS)
    _, resid = adapter.run_with_resid(torch.tensor([IDS]))
    h = resid[2, 0, 4].double()
    n = h.norm()
    expected = (torch.sign(h) / n - h.abs().sum() * h / n**3).abs().sum()
    assert float(v[2, 4, 2, 4]) == pytest.approx(float(expected), rel=1e-4)


def test_table_figure_and_bad_query():
    tok = tiny_tokenizer()
    adapter = ModelAdapter(build_tiny("gpt2", seed=4), tok)
    prompts = {"name": "toy", "prompts": [{"id": "a", "text": "w1 w2 w3 w4 w5"}]}
    table = visibility_table(adapter, prompts)
    assert len(table) == (adapter.n_layers + 1) ** 2 * 5**2
    assert set(table["token"]) == {"w1", "w2", "w3", "w4", "w5"}
    fig, caption = plot_visibility(table, -1, 3, "tiny")
    assert "position 3 ('w4')" in caption and len(fig.axes) == 4
    with pytest.raises(LensLabError, match="no prompt 'b'"):
        visibility_table(adapter, prompts, prompt_id="b")
    with pytest.raises(LensLabError, match="out of range"):
        check_query(adapter, 5, 1, 9)
