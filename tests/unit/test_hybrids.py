"""Hybrid decoders (a different mixer per block), Falcon-H1, Gemma 4 and Gemma 3n: every method
either equals an independent computation or is refused by name, and the refusals name the real
cause."""

import contextlib
import dataclasses

import pytest
import torch

from lenslab.attribution.dla import direct_logit_attribution
from lenslab.errors import LensLabError
from lenslab.gate import load_model
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, save_tiny
from lenslab.patching.reference import (
    clean_head_inputs,
    clean_states,
    naive_head_patch,
    naive_patch,
)
from lenslab.patching.run import Patch, Patcher

IDS = [5, 17, 9, 40, 23, 11]
CORRUPT = [5, 30, 9, 41, 23, 11]
KINDS = {
    "qwen3_next": ["linear_attention", "attention", "linear_attention"],
    "qwen3_5": ["linear_attention", "attention", "linear_attention"],
    "lfm2": ["conv", "attention", "conv"],
    "jamba": ["mamba", "attention", "mamba"],
    "minimax": ["linear_attention", "attention", "linear_attention"],
}


def _adapter(name: str, **arch) -> ModelAdapter:
    return ModelAdapter(build_tiny(name), arch=arch or None, name=name)


def _record(adapter: ModelAdapter, ids: list[int]) -> tuple[torch.Tensor, dict]:
    """The residual stream and each block's mixer and MLP outputs, from hooks of our own."""
    seen: dict = {}

    def keep(key):
        def edit(out):
            seen[key] = out.detach().clone()

        return edit

    with torch.no_grad(), contextlib.ExitStack() as stack:
        for layer in range(adapter.n_layers):
            stack.enter_context(adapter.edit_output(adapter.attn(layer), keep(("attn", layer))))
            stack.enter_context(adapter.edit_output(adapter.mlp(layer), keep(("mlp", layer))))
        _, resid = adapter.run_with_resid(torch.tensor([ids]))
    return resid, seen


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_block_maps_its_own_mixer(name):
    adapter = _adapter(name)
    assert [adapter.mixer_kind(i) for i in range(adapter.n_layers)] == KINDS[name]


@pytest.mark.parametrize("name", ["qwen3_next", "qwen3_5", "lfm2", "jamba"])
def test_hybrid_update_is_mixer_plus_mlp(name):
    # Independent of the gate: every block adds exactly its mixer's and its MLP's outputs.
    adapter = _adapter(name)
    resid, seen = _record(adapter, IDS)
    for layer in range(adapter.n_layers):
        want = resid[layer] + seen[("attn", layer)] + seen[("mlp", layer)]
        torch.testing.assert_close(resid[layer + 1], want, rtol=0, atol=1e-5)
    assert all(adapter.fidelity.methods().values())


def test_a_single_attn_path_names_the_blocks_without_it_and_the_fix():
    with pytest.raises(LensLabError, match=r"block\(s\) \[0, 2\] have no module at arch.attn"):
        _adapter("qwen3_next", attn="self_attn")
    try:
        _adapter("qwen3_next", attn="self_attn")
    except LensLabError as e:
        assert "self_attn|linear_attn" in e.fix
    # The alternatives the error suggests work as a hand map.
    adapter = _adapter("qwen3_next", attn="linear_attn|self_attn")
    assert adapter.fidelity.available("patch_attn")


@pytest.mark.parametrize("name", ["lfm2", "jamba", "qwen3_next"])
def test_mixer_patching_equals_the_naive_loop(name):
    adapter = _adapter(name)
    patcher = Patcher(adapter, IDS, CORRUPT)
    assert patcher.runner == "suffix"
    patches = [Patch(k, (layer,), (1, 5)) for k in ("attn", "mlp", "resid") for layer in range(3)]
    fast = patcher.run(patches, [0] * len(patches))
    clean = clean_states(adapter, torch.tensor(IDS))
    slow = torch.stack([naive_patch(adapter, clean, torch.tensor(CORRUPT), p) for p in patches])
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-4)


def test_dla_splits_heads_only_where_the_mixer_is_attention():
    adapter = _adapter("jamba")
    table = direct_logit_attribution(adapter, IDS, {"a": 7, "b": 11}, heads=True)
    assert set(table[table["kind"] == "head"]["layer"]) == {1}  # the attention block only
    with torch.no_grad():
        logits = adapter.forward(torch.tensor([IDS]))[0, -1]
    whole = table[table["kind"].isin(["embed", "attn", "mlp", "bias"])]
    sums = whole.groupby("token")["value"].sum()
    torch.testing.assert_close(
        torch.tensor([sums["a"], sums["b"]]).float(), logits[[7, 11]], rtol=0, atol=1e-4
    )


def test_falcon_h1_multipliers_match_an_independent_computation():
    adapter = _adapter("falcon_h1")
    model, ids = adapter.model, torch.tensor([IDS])
    with torch.no_grad():
        logits, resid = adapter.run_with_resid(ids)
        # Embedding multiplier 3 before block 0; lm_head multiplier 0.5 after the head.
        embed = model.model.embed_tokens(ids) * 3.0
        head = model.lm_head(model.model.final_layernorm(resid[-1])) * 0.5
    torch.testing.assert_close(resid[0], embed, rtol=0, atol=1e-6)
    torch.testing.assert_close(head, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(adapter.decode(resid[-1]), logits, rtol=0, atol=1e-5)


def test_falcon_h1_refusal_names_the_parallel_mamba_and_multipliers():
    adapter = _adapter("falcon_h1")
    assert adapter.available("lens") and adapter.available("patch_resid")
    with pytest.raises(LensLabError) as err:
        adapter.require("dla")
    text = str(err.value)
    assert "'sublayer_sum'" in text and "parallel mixer 'mamba' (FalconH1Mixer)" in text
    assert "attn_out_multiplier=1.3" in text and "ssm_out_multiplier=1.2" in text
    assert "normalises its sublayer outputs" not in text


def test_gemma4_patching_uses_the_full_runner_and_equals_full_forwards():
    adapter = _adapter("gemma4")
    report = adapter.fidelity
    assert not report.checks["suffix_patched"].ok  # replayed per-layer inputs / shared K/V
    cause = report.checks["sublayer_sum"].cause
    assert "per_layer_input_gate" in cause and "per-layer input" in cause
    with pytest.raises(LensLabError, match="the suffix runner cannot replay"):
        Patcher(adapter, IDS, CORRUPT, runner="suffix")
    # More patches than one batch of 64, each against its own hooked full forward. Residual
    # patches are refused here (resid_complete: later blocks read per-layer inputs and K/V
    # from before the patch), so the runner is checked on head patches.
    cells = [(layer, t, h) for layer in range(4) for t in range(6) for h in range(4)]
    patches = [Patch("head", (layer,), (t,), (h,)) for layer, t, h in cells]
    patcher = Patcher(adapter, IDS, CORRUPT, batch_size=64)
    assert patcher.runner == "full"
    fast = patcher.run(patches, [0] * len(patches))
    clean = clean_head_inputs(adapter, torch.tensor(IDS))
    slow = torch.stack(
        [naive_head_patch(adapter, clean, torch.tensor(CORRUPT), *cell) for cell in cells]
    )
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-4)
    with pytest.raises(LensLabError, match="patch_attn is ruled out.*'sublayer_sum'"):
        patcher.run([Patch("attn", (0,), (1,))], [0])
    with pytest.raises(LensLabError, match="patch_resid is ruled out.*'resid_complete'"):
        patcher.run([Patch("resid", (0,), (1,))], [0])


def test_gemma3n_builds_small_and_is_refused_at_load(tmp_path):
    model = build_tiny("gemma3n")
    with torch.no_grad():
        hidden = model(torch.tensor([IDS]), output_hidden_states=True).hidden_states
    assert hidden[1].shape == (2, 1, len(IDS), 32)  # the AltUp axis in front
    with pytest.raises(LensLabError, match=r"AltUp's extra state axis is not supported"):
        ModelAdapter(model, name="g3n")
    path = save_tiny("gemma3n", tmp_path / "g3n")
    with pytest.raises(LensLabError, match=r"AltUp.*\[2, batch, tokens, d_model\]"):
        load_model({"name": "g3n", "source": str(path)})


def _passing_gate(adapter: ModelAdapter) -> None:
    """Pretend the gate passed on its probe, so DLA runs into its own completeness check."""
    report = adapter.fidelity
    report.checks = {n: dataclasses.replace(c, ok=True) for n, c in report.checks.items()}


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("granite", r"0\.22 x the sublayer terms, a residual multiplier"),
        ("falcon_h1", r"parallel mixer 'mamba'.*attn_out_multiplier=1\.3"),
        ("gemma4", r"'per_layer_input_gate' \(Linear\).*per-layer input"),
        ("minimax", r"residual is taken after a norm.*post-LN"),
    ],
)
def test_dla_completeness_failure_names_the_real_cause(name, cause):
    adapter = _adapter(name)
    _passing_gate(adapter)
    if name == "granite":
        adapter.residual_multiplier = 1.0  # as if lenslab did not know Granite's multiplier
    # A tight tolerance: tiny random models have logits far below the default's 1e-3 scale.
    with pytest.raises(LensLabError, match="components sum to") as err:
        direct_logit_attribution(adapter, IDS, {"a": 7}, atol=1e-5)
    assert err.match(cause)
    assert "normalises its sublayer outputs" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "arch", "cause"),
    [
        ("opt_350m", {}, r"residual is taken after a norm"),
        ("minimax", {}, r"residual is taken after a norm \(\['input_layernorm'"),
        ("bloom", {"attn": "self_attention"}, r"returns the residual stream plus its update"),
        ("gemma3", {"attn_out": "", "mlp_out": ""}, r"normalises its sublayer outputs"),
    ],
)
def test_gate_causes_are_specific(name, arch, cause):
    adapter = _adapter(name, **arch)
    with pytest.raises(LensLabError, match=f"'sublayer_sum' fails.*{cause}"):
        adapter.require("dla")
