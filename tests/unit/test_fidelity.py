"""The fidelity gate: every identity holds on the built-in maps, and a broken map or model is
refused with the identity, its cause and the methods it rules out."""

import pytest
import torch

from lenslab.attribution.dla import direct_logit_attribution
from lenslab.errors import LensLabError
from lenslab.gate import load_model
from lenslab.gate.fidelity import IDENTITIES, NEEDS, run_gate
from lenslab.models.adapter import ModelAdapter, measure_norm
from lenslab.models.tiny import build_tiny, save_tiny
from lenslab.patching.run import Patch, Patcher

IDS = [5, 17, 9, 40, 23, 11]


def test_every_identity_holds_on_the_existing_tiny_architectures(tiny_adapter):
    report = tiny_adapter.fidelity
    assert set(report.checks) == set(IDENTITIES)
    bad = {n: (c.error, c.cause) for n, c in report.checks.items() if not c.ok}
    assert not bad
    assert all(report.methods().values())


def test_wrong_final_norm_is_rejected_at_load(tmp_path):
    path = save_tiny("llama", tmp_path / "m")
    # A module that exists but is not the final norm: the old adapter decoded through it.
    cfg = {
        "name": "m",
        "source": str(path),
        "arch": {"final_norm": "model.layers.2.input_layernorm"},
    }
    with pytest.raises(LensLabError, match="'lens_final' fails.*rules out lens, .*dla"):
        load_model(cfg)
    cfg["arch"] = {"final_norm": "model.nrom"}
    with pytest.raises(LensLabError, match=r"no module at arch.final_norm='model.nrom'"):
        load_model(cfg)
    cfg["arch"] = {"blocks": "model.layer"}
    with pytest.raises(LensLabError, match=r"no list of blocks at arch.blocks='model.layer'"):
        load_model(cfg)


def test_unknown_logit_multiplier_is_named():
    model = build_tiny("cohere")
    adapter = ModelAdapter(model, name="c")
    adapter.logit_scale = 1.0  # as if lenslab did not know Cohere's logit_scale
    with pytest.raises(LensLabError, match=r"0\.0625 x the lens's.*logit multiplier"):
        run_gate(adapter)


def test_residual_inside_the_module_rules_out_sublayer_methods_only():
    adapter = ModelAdapter(build_tiny("bloom"), arch={"attn": "self_attention"}, name="b")
    report = adapter.fidelity
    assert not report.checks["sublayer_sum"].ok
    assert "returns the residual stream plus its update" in report.checks["sublayer_sum"].cause
    assert {m for m, ok in report.methods().items() if not ok} >= {"dla", "patch_attn"}
    assert report.available("patch_resid") and report.available("lens")
    with pytest.raises(LensLabError, match="patch_attn is ruled out.*'sublayer_sum'"):
        Patcher(adapter, IDS, IDS[::-1]).run([Patch("attn", (0,), (1,))], [0])
    with pytest.raises(LensLabError, match="dla is ruled out"):
        direct_logit_attribution(adapter, IDS, {"a": 7})


def test_post_sublayer_norms_unmapped_are_named():
    adapter = ModelAdapter(build_tiny("gemma3"), arch={"attn_out": "", "mlp_out": ""}, name="g")
    cause = adapter.fidelity.checks["sublayer_sum"].cause
    assert "normalises its sublayer outputs" in cause and "attn_out" in cause


def test_unknown_residual_multiplier_is_named():
    adapter = ModelAdapter(build_tiny("granite"), name="gr")
    adapter.residual_multiplier = 1.0
    cause = run_gate(adapter).checks["sublayer_sum"].cause
    assert "0.22 x the sublayer terms" in cause


def test_falcon_mlp_is_recorded_before_the_in_place_add():
    # Falcon adds the attention output into the MLP output in place; a recorded view would
    # be MLP + attention. Restoring the clean MLP output alone must match the naive loop.
    from lenslab.patching.reference import clean_states, naive_patch

    adapter = ModelAdapter(build_tiny("falcon"), name="f")
    assert adapter.fidelity.available("patch_mlp")
    patcher = Patcher(adapter, IDS, IDS[::-1])
    patch = Patch("mlp", (1,), (0, 3, 5))
    fast = patcher.run([patch], [0])[0]
    slow = naive_patch(
        adapter, clean_states(adapter, torch.tensor(IDS)), torch.tensor(IDS[::-1]), patch
    )
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)
    # And the recorded clean MLP output is not the MLP output plus the attention output.
    diff = patcher.clean.mlp[1] - clean_states(adapter, torch.tensor(IDS))["mlp"][1]
    assert float(diff.abs().max()) < 1e-6


def test_embedding_multiplier_stays_in_the_autograd_path():
    adapter = ModelAdapter(build_tiny("granite"), name="gr")  # embedding_multiplier 12
    logits, _ = adapter.run_with_resid(torch.tensor([IDS]))
    g_logits, states = adapter.run_with_resid_graph(IDS)
    torch.testing.assert_close(g_logits, logits, rtol=0, atol=1e-5)
    assert states[0].requires_grad


def test_opt_350m_noise_has_the_embedding_width():
    from lenslab.patching.corrupt import subject_noise

    adapter = ModelAdapter(build_tiny("opt_350m"), name="o")
    assert adapter.d_embed == 32 and adapter.d_model == 48
    noise = subject_noise(len(IDS), [1, 2], adapter.d_embed, 0.5, 2, seed=0)
    patcher = Patcher(adapter, IDS, noise=noise)
    out = patcher.run([Patch("resid", (1,), (1, 2))])
    assert out.shape == (2, 1, adapter.vocab_size) and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", ["gemma", "cohere", "gpt2", "llama"])
def test_measured_norm_reproduces_the_module(name):
    adapter = ModelAdapter(build_tiny(name))
    norm = adapter.final_norm
    form = measure_norm(norm, adapter.d_model)
    x = torch.randn(4, adapter.d_model) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(form.apply(x), norm(x), rtol=1e-5, atol=1e-5)
    # Gemma scales by 1 + w: the measured gamma says so without reading the class name.
    if name == "gemma":
        torch.testing.assert_close(form.gamma, 1 + norm.weight.detach(), rtol=0, atol=1e-5)
    assert form.centred == (name in ("gpt2", "cohere"))


def test_every_method_names_its_identities():
    assert set().union(*NEEDS.values()) == set(IDENTITIES)
    assert all("lens_final" in needs for needs in NEEDS.values())


def test_skip_markers_carry_the_reason(tmp_path):
    from lenslab.figures.save import save_skipped_figure
    from lenslab.io import read_json, read_parquet
    from lenslab.skipped import skip_reason, skipped, write_skipped_table

    adapter = ModelAdapter(build_tiny("bloom"), arch={"mlp": "mlp"}, name="b")
    assert skip_reason(adapter, "lens", "patch_resid") is None
    reason = skip_reason(adapter, "patch_resid", "dla")
    assert reason and "dla is ruled out for b" in reason and "mlp module at 'mlp'" in reason
    write_skipped_table(tmp_path / "t.parquet", reason)
    table = read_parquet(tmp_path / "t.parquet")
    assert skipped(table) == reason
    assert skipped(table.assign(value=1.0)) is None  # a real table is never a marker
    save_skipped_figure(tmp_path / "F10_b_x.png", "F10 direct logit attribution, b, x", reason)
    caption = read_json(tmp_path / "F10_b_x.json")
    assert caption["skipped"] == reason and caption["figure"] == "F10"
    assert (tmp_path / "F10_b_x.png").stat().st_size > 0 and (tmp_path / "F10_b_x.svg").exists()
