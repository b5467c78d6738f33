"""Attribute lens (LRE, Hernandez et al. 2024): exact checks on models built for them, the
first-order property on tiny models of several architectures, and faithfulness bookkeeping."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from lenslab.errors import LensLabError
from lenslab.lenses.attribute import (
    RelationPrompt,
    estimate_lre,
    fit_attribute_lens,
    load_attribute_lens,
    save_attribute_lenses,
    subject_jacobian,
    subject_jacobians,
)
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.patchscopes.core import write_resid
from lenslab.relations import faithfulness, faithfulness_summary, split, wilson
from lenslab.stats.lens_stats import prompt_stats

D = 32


class Identity(nn.Module):
    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class LinearRelation(nn.Module):
    """The last position receives ``A @ x[-1 - offset]``: the relation is linear by design."""

    def __init__(self, a: torch.Tensor, offset: int):
        super().__init__()
        self.a, self.offset = a, offset

    def forward(self, hidden_states, *args, **kwargs):
        out = hidden_states.clone()
        out[:, -1] = hidden_states[:, -1] + hidden_states[:, -1 - self.offset] @ self.a.T
        return out


def linear_model(a: torch.Tensor, offset: int) -> ModelAdapter:
    model = build_tiny("gpt2")
    model.transformer.h[0] = Identity()
    model.transformer.h[1] = LinearRelation(a, offset)
    model.transformer.h[2] = Identity()
    # Its blocks have no sublayers: a map with none (the adapter checks every path it is given).
    return ModelAdapter(model, tiny_tokenizer(), arch={"attn": "", "mlp": ""}, name="linear")


def test_lre_recovers_w_and_b_of_a_linear_relation() -> None:
    a = torch.randn(D, D, generator=torch.Generator().manual_seed(3)) * 0.3
    adapter = linear_model(a, offset=2)
    prompts = [RelationPrompt(f"p{s}", [7, 9, s, 5, 11], 2, 0) for s in (20, 31, 45)]
    _, resid = adapter.run_with_resid(torch.tensor([prompts[0].ids]))
    for layer in (0, 1):  # states before the linear block: W = A, b = the last token's state
        w, b = estimate_lre(adapter, prompts, layer)
        torch.testing.assert_close(w, a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b, resid[layer, 0, -1], atol=1e-5, rtol=1e-5)
    for layer in (2, 3):  # after it the subject no longer reaches the last position
        w, _ = estimate_lre(adapter, prompts, layer)
        assert torch.count_nonzero(w) == 0
    # The lens reproduces the model's last state (and so its logits) on any subject.
    lens = fit_attribute_lens(adapter, prompts, relation="linear")
    logits, resid = adapter.run_with_resid(torch.tensor([[7, 9, 60, 5, 11]]))
    torch.testing.assert_close(
        lens.transform(resid[1, 0, 2], 1), resid[3, 0, -1], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(lens.logits(resid[1, 0, 2], 1), logits[0, -1], atol=1e-4, rtol=1e-4)


def _z_at(adapter: ModelAdapter, ids, pos: int, layer: int, h: torch.Tensor) -> torch.Tensor:
    states: list[torch.Tensor] = []
    rows = {layer: (torch.zeros(1, dtype=torch.long), h[None])}
    with torch.no_grad(), write_resid(adapter, rows, pos), adapter.record_resid(states):
        adapter.forward(torch.tensor([ids]))
    return states[-1][0, -1]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "qwen2"])
def test_beta_one_exact_jacobian_is_first_order(arch: str) -> None:
    """With W = the exact Jacobian at h and b = z - W h, LRE(h + e d) - z(h + e d) is O(e^2):
    halving e quarters the error, and the error is far below the linear term."""
    adapter = ModelAdapter(build_tiny(arch).double(), tiny_tokenizer(), name=arch)
    ids, pos, layer = [5, 17, 9, 23, 40, 12], 2, 1
    h, z, jac = subject_jacobian(adapter, ids, pos, layer)
    torch.testing.assert_close(_z_at(adapter, ids, pos, layer, h), z)
    b = z - jac @ h
    d = torch.randn(h.shape, generator=torch.Generator().manual_seed(0), dtype=h.dtype)
    errs = []
    for eps in (1e-4, 5e-5):
        hp = h + eps * d
        errs.append(float((jac @ hp + b - _z_at(adapter, ids, pos, layer, hp)).norm()))
        assert errs[-1] < 1e-2 * float((eps * jac @ d).norm())
    assert 3.0 < errs[0] / errs[1] < 5.0


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_all_layer_jacobians_equal_one_pass_per_layer(arch: str) -> None:
    """One backward from z serves every layer: equal to writing h as a leaf layer by layer,
    for a subject in the middle (later positions carry it) and at the last position."""
    adapter = ModelAdapter(build_tiny(arch).double(), tiny_tokenizer(), name=arch)
    ids = [5, 17, 9, 23, 40, 12]
    for pos in (2, len(ids) - 1):
        h, z, jac = subject_jacobians(adapter, ids, pos)
        assert jac.shape == (adapter.n_layers + 1, D, D)
        for layer in range(adapter.n_layers + 1):
            h1, z1, jac1 = subject_jacobian(adapter, ids, pos, layer)
            torch.testing.assert_close(h[layer], h1)
            torch.testing.assert_close(z, z1)
            torch.testing.assert_close(jac[layer], jac1, atol=1e-10, rtol=1e-8)
        assert torch.count_nonzero(jac[0]) > 0  # the subject reaches z: not a vacuous match


def test_faithfulness_counts_only_correct_prompts(gpt2_adapter: ModelAdapter) -> None:
    ids = [[5, 17, 9, 23], [8, 30, 9, 23], [6, 44, 9, 23], [11, 52, 9, 23]]
    with torch.no_grad():
        preds = [int(gpt2_adapter.forward(torch.tensor([i]))[0, -1].argmax()) for i in ids]
    # Prompts 0 and 2 ask for the model's own answer, prompts 1 and 3 for another token.
    objects = [preds[0], (preds[1] + 1) % 96, preds[2], (preds[3] + 1) % 96]
    prompts = [
        RelationPrompt(f"r.{n}", i, 1, o) for n, (i, o) in enumerate(zip(ids, objects, strict=True))
    ]
    lens = fit_attribute_lens(gpt2_adapter, prompts[:2], relation="r")
    table = faithfulness(gpt2_adapter, lens, prompts)
    assert table["model_correct"].groupby(table["prompt_id"]).first().tolist() == [
        True,
        False,
        True,
        False,
    ]
    summary = faithfulness_summary(table)
    assert (summary["n_correct"] == 2).all() and (summary["n_prompts"] == 4).all()
    ok = table[table["model_correct"]].groupby("layer")["hit"].mean()
    assert summary.set_index("layer")["recall"].equals(ok.rename("recall"))


def test_faithfulness_summary_by_hand() -> None:
    """Wrongly answered prompts never count, whatever the LRE says on them."""
    rows = [("r", f"p{i}", 0, correct, hit) for i, (correct, hit) in
            enumerate([(True, True), (True, False), (False, True), (False, True), (True, True)])]  # fmt: skip
    t = pd.DataFrame(rows, columns=["relation", "prompt_id", "layer", "model_correct", "hit"])
    s = faithfulness_summary(t).iloc[0]
    assert s["recall"] == pytest.approx(2 / 3) and s["n_correct"] == 3 and s["n_prompts"] == 5
    assert s["ci_low"] < 2 / 3 < s["ci_high"]
    lo, hi = wilson(5, 5)
    assert hi == 1.0 and 0.4 < lo < 0.6  # 0.566 for 5/5


def test_attribute_lens_goes_through_the_lens_statistics(gpt2_adapter: ModelAdapter) -> None:
    prompts = [RelationPrompt(f"r.{s}", [7, s, 9, 23], 1, 0) for s in (20, 31, 45)]
    lens = fit_attribute_lens(gpt2_adapter, prompts, beta=2.0, relation="r")
    ids = torch.tensor([7, 20, 9, 23, 40])
    _, resid = gpt2_adapter.run_with_resid(ids[None])
    stats = prompt_stats(lens, resid[:, 0], ids)
    assert stats is not None
    # beta scales only the linear part.
    h = resid[2, 0, 1]
    torch.testing.assert_close(
        lens.transform(h, 2) - lens.bias[2], 2.0 * (lens.weight[2] @ h), atol=1e-5, rtol=1e-5
    )


def test_save_load_and_shape_errors(tmp_path, gpt2_adapter: ModelAdapter) -> None:
    prompts = [RelationPrompt(f"r.{s}", [7, s, 9], 1, 0) for s in (20, 31)]
    lens = fit_attribute_lens(gpt2_adapter, prompts, beta=1.5, relation="r")
    save_attribute_lenses([lens], tmp_path / "r.safetensors")
    back = load_attribute_lens(tmp_path / "r.safetensors", gpt2_adapter, "r")
    assert back.beta == 1.5 and back.relation == "r" and torch.equal(back.weight, lens.weight)
    other = ModelAdapter(build_tiny("gpt2", n_embd=48), tiny_tokenizer())
    with pytest.raises(LensLabError, match="does not fit"):
        load_attribute_lens(tmp_path / "r.safetensors", other, "r")
    with pytest.raises(LensLabError, match="no attribute lens"):
        load_attribute_lens(tmp_path / "r.safetensors", gpt2_adapter, "capital")
    from lenslab.lenses.registry import build_lens

    (tmp_path / "lre.safetensors").write_bytes((tmp_path / "r.safetensors").read_bytes())
    via_registry = build_lens("attribute.r", gpt2_adapter, tmp_path)
    assert torch.equal(via_registry.bias, lens.bias) and via_registry.beta == 1.5
    with pytest.raises(
        LensLabError, match=r"attribute.r lens needs its fitted parameters \(lre.safetensors\)"
    ):
        build_lens("attribute.r", gpt2_adapter)
    with pytest.raises(LensLabError, match="leaves no prompts"):
        split(prompts, 2)
