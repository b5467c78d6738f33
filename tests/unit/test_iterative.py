"""Residual updates vs gradients (F14): agreement with HF's own hidden states and gradients."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lenslab.errors import LensLabError
from lenslab.figures.iterative import plot_iterative
from lenslab.iterative import iterative_table, update_gradient_cosines
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer

IDS = [5, 17, 3, 42, 8, 23, 11, 30]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_cosines_agree_with_hf_hidden_states_and_autograd(arch):
    """Independent computation: HF's hidden_states (below the final-normed last one) are the
    residual stream; differentiate the summed next-token loss with respect to them."""
    model = build_tiny(arch, seed=5)
    ours = update_gradient_cosines(ModelAdapter(model), IDS)
    ids = torch.tensor([IDS])
    out = model(input_ids=ids, labels=None, output_hidden_states=True)
    hidden = out.hidden_states[:-1]  # resid[0..L-1]
    loss = F.cross_entropy(out.logits[0, :-1], ids[0, 1:], reduction="sum")
    grads = torch.autograd.grad(loss, hidden)
    assert ours.shape == (model.config.num_hidden_layers, len(IDS) - 1)
    for layer in range(len(hidden) - 1):
        update = (hidden[layer + 1] - hidden[layer])[0, :-1]
        expected = F.cosine_similarity(update, -grads[layer][0, :-1], dim=-1)
        torch.testing.assert_close(ours[layer], expected.detach(), atol=1e-5, rtol=1e-4)
    assert ours.abs().max() <= 1 + 1e-6 and ours.abs().sum() > 0


def test_a_silenced_block_has_zero_cosine():
    model = build_tiny("gpt2", seed=6)
    with torch.no_grad():
        for proj in (model.transformer.h[1].attn.c_proj, model.transformer.h[1].mlp.c_proj):
            proj.weight.zero_()
            proj.bias.zero_()
    cos = update_gradient_cosines(ModelAdapter(model), IDS)
    assert (cos[1] == 0).all() and (cos[0] != 0).all()


def test_table_figure_and_one_token_prompt():
    adapter = ModelAdapter(build_tiny("gpt2", seed=7), tiny_tokenizer())
    prompts = {"name": "toy", "prompts": [{"id": "a", "text": "w1 w2 w3 w4 w5"}]}
    table = iterative_table(adapter, prompts)
    assert len(table) == adapter.n_layers * 4 and table["token"].iloc[0] == "w1"
    fig, caption = plot_iterative(table, "tiny")
    assert "4 positions per layer" in caption and "layers 1..3" in caption
    with pytest.raises(LensLabError, match="one token"):
        update_gradient_cosines(adapter, [5])
