"""The Jacobian lens: exact special cases, an analytic Jacobian, merging, files, refusals."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from lenslab.errors import LensLabError
from lenslab.lenses import jacobian as jl
from lenslab.lenses.jacobian import FitSettings, JacobianFit, JacobianLens, fit_jacobian
from lenslab.lenses.logit import LogitLens
from lenslab.lenses.registry import build_lens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer

SETTINGS = FitSettings(skip_first=3, dim_batch=6)


def _prompts(n: int, length: int = 12, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 90, (length,), generator=g).tolist() for _ in range(n)]


@pytest.fixture
def gpt2() -> ModelAdapter:
    torch.manual_seed(0)
    return ModelAdapter(build_tiny("gpt2"), tiny_tokenizer(), name="tiny-gpt2")


# -- a model whose blocks are linear: h -> h + h W^T + c * cumsum_t(h) U^T -------------------
class _Mix(nn.Module):
    """Causal position mixing: c times the running sum over positions <= t, then U."""

    def __init__(self, d: int, c: float):
        super().__init__()
        self.proj = nn.Linear(d, d, bias=False)
        self.c = c

    def forward(self, h):
        return self.c * self.proj(h.cumsum(dim=1))


class _LinearBlock(nn.Module):
    def __init__(self, d: int, c: float):
        super().__init__()
        self.attn = _Mix(d, c)
        self.mlp = nn.Linear(d, d, bias=True)  # the bias does not enter the Jacobian

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states + self.mlp(hidden_states) + self.attn(hidden_states)


def _linear_adapter() -> ModelAdapter:
    torch.manual_seed(1)
    model = build_tiny("gpt2")
    d = model.config.n_embd
    for i in range(len(model.transformer.h)):
        block = _LinearBlock(d, c=0.1)
        for p in block.parameters():
            nn.init.normal_(p, std=0.15)
        model.transformer.h[i] = block
    return ModelAdapter(model.eval(), tiny_tokenizer(), name="linear-gpt2")


def _analytic_jacobian(adapter: ModelAdapter, r: int, n_tokens: int, valid: range) -> torch.Tensor:
    """J of resid[r] from the blocks' weights alone: each block is the linear map
    I + I_T (x) W + c C (x) U on vec(H) (H [T, d] row-major, C the lower-triangular ones)."""
    d = adapter.d_model
    causal = torch.tril(torch.ones(n_tokens, n_tokens, dtype=torch.float64))
    total = torch.eye(n_tokens * d, dtype=torch.float64)
    for block in list(adapter.blocks)[r:]:
        w = block.mlp.weight.double()
        u = block.attn.proj.weight.double()
        step = torch.eye(n_tokens * d, dtype=torch.float64)
        step += torch.kron(torch.eye(n_tokens, dtype=torch.float64), w)
        step += block.attn.c * torch.kron(causal, u)
        total = step @ total
    blocks = total.view(n_tokens, d, n_tokens, d)  # [t', i, t, j]
    rows = torch.tensor(list(valid))
    return blocks[rows][:, :, rows].sum(0).sum(1) / len(valid)


def test_identity_matrices_are_the_logit_lens_exactly(gpt2):
    eye = {r: torch.eye(gpt2.d_model) for r in range(gpt2.n_layers)}
    lens, logit = JacobianLens(gpt2, eye, n_prompts=1), LogitLens(gpt2)
    _, resid = gpt2.run_with_resid(torch.tensor(_prompts(2)))
    with torch.no_grad():
        for layer in range(gpt2.n_layers + 1):
            assert torch.equal(lens.logits(resid[layer], layer), logit.logits(resid[layer], layer))


def test_linear_blocks_give_the_analytic_jacobian():
    adapter = _linear_adapter()
    ids = _prompts(1, length=10)[0]
    fitted = jl.prompt_jacobian(adapter, ids, SETTINGS)
    valid = SETTINGS.valid(len(ids))
    assert sorted(fitted) == list(range(adapter.n_layers))  # resid[0..L-1], resid[0] included
    for r, matrix in fitted.items():
        # the forward drops the last token; causality makes the analytic map on 9 tokens exact
        want = _analytic_jacobian(adapter, r, valid.stop, valid)
        assert torch.allclose(matrix.double(), want, atol=1e-5, rtol=1e-5), r
        assert not torch.allclose(want, torch.eye(adapter.d_model, dtype=torch.float64), atol=0.1)


def test_a_fit_of_the_last_layer_onto_itself_is_the_identity(gpt2):
    last = gpt2.n_layers
    got = jl.prompt_jacobian(gpt2, _prompts(1)[0], SETTINGS, layers=[last])
    assert torch.equal(got[last], torch.eye(gpt2.d_model))


def test_prompt_jacobian_equals_brute_force_autograd(gpt2):
    """Batched one-hot cotangents give the same rows as the full Jacobian of the forward."""
    ids = _prompts(1, length=9)[0]
    valid = SETTINGS.valid(len(ids))
    fitted = jl.prompt_jacobian(gpt2, ids, SETTINGS)
    _, resid = gpt2.run_with_resid(torch.tensor([ids]))
    block = gpt2.blocks[0]

    def final_from_resid0(h0):
        states: list[torch.Tensor] = []
        swap = block.register_forward_pre_hook(
            lambda m, a, kw: ((h0, *a[1:]), kw), with_kwargs=True
        )
        with gpt2.record_resid(states):
            gpt2.model(input_ids=torch.tensor([ids]), use_cache=False)
        swap.remove()
        return states[-1]

    full = torch.autograd.functional.jacobian(final_from_resid0, resid[0])[0, :, :, 0]
    rows = torch.tensor(list(valid))
    want = full[rows][:, :, rows].sum(0).sum(1) / len(valid)
    assert torch.allclose(fitted[0], want, atol=1e-5)


def test_two_half_fits_merge_to_the_full_fit(gpt2):
    prompts = _prompts(6)
    full = fit_jacobian(gpt2, prompts, SETTINGS, progress=False)
    first = fit_jacobian(gpt2, prompts[:2], SETTINGS, progress=False)
    second = fit_jacobian(gpt2, prompts[2:], SETTINGS, progress=False)
    merged = first.merge(second)
    assert merged.n_prompts == full.n_prompts == 6
    for r, matrix in full.means().items():
        assert torch.allclose(merged.means()[r], matrix, atol=1e-6, rtol=0)
    other = fit_jacobian(gpt2, prompts[:2], FitSettings(skip_first=2, dim_batch=6), progress=False)
    with pytest.raises(LensLabError, match="differ in model or settings"):
        first.merge(other)


def test_dim_batch_does_not_change_the_fit(gpt2):
    prompts = _prompts(2)
    a = fit_jacobian(gpt2, prompts, FitSettings(skip_first=3, dim_batch=1), progress=False)
    b = fit_jacobian(gpt2, prompts, FitSettings(skip_first=3, dim_batch=32), progress=False)
    for r in a.sums:
        assert torch.allclose(a.sums[r], b.sums[r], atol=1e-5)


def test_artifact_round_trip_in_the_reference_format(gpt2, tmp_path):
    lens = fit_jacobian(gpt2, _prompts(3), SETTINGS, progress=False).lens(gpt2)
    lens.save(tmp_path / "lens.pt")
    payload = torch.load(tmp_path / "lens.pt", weights_only=True)
    assert payload["source_layers"] == list(range(gpt2.n_layers - 1))  # blocks 0..L-2
    assert payload["d_model"] == gpt2.d_model and payload["n_prompts"] == 3
    assert all(m.dtype == torch.float16 for m in payload["J"].values())
    # block b of the artifact is lenslab's resid[b + 1]
    assert torch.equal(payload["J"][0], lens.matrices[1].half())
    assert torch.equal(payload[jl.EMBED_KEY], lens.matrices[0].half())
    back = build_lens("jacobian", gpt2, tmp_path)
    assert back.metadata["skip_first_positions"] == 3
    assert back.metadata["lenslab_model"] == "tiny-gpt2"
    for r, matrix in lens.matrices.items():
        assert torch.equal(back.matrices[r], matrix.half().float())
    (tmp_path / "b").mkdir()
    lens.save(tmp_path / "b" / "lens.pt")  # same lens, same bytes
    assert (tmp_path / "lens.pt").read_bytes() == (tmp_path / "b" / "lens.pt").read_bytes()


def test_a_published_artifact_without_embeddings_reads_resid0_as_the_logit_lens(gpt2, tmp_path):
    d, n = gpt2.d_model, gpt2.n_layers
    payload = {
        "J": {b: torch.randn(d, d).half() for b in range(n - 1)},
        "n_prompts": 5,
        "source_layers": list(range(n - 1)),
        "d_model": d,
    }
    torch.save(payload, tmp_path / "lens.pt")
    lens = JacobianLens.load(tmp_path / "lens.pt", gpt2)
    h = torch.randn(2, d)
    assert torch.equal(lens.transform(h, 0), h) and torch.equal(lens.transform(h, n), h)
    assert torch.allclose(lens.transform(h, 2), h @ payload["J"][1].float().T)
    assert "logit lens" in lens.description


def test_artifacts_for_another_width_or_depth_are_refused(gpt2, tmp_path):
    deep = ModelAdapter(build_tiny("gpt2", n_layer=4), tiny_tokenizer(), name="deep")
    fit_jacobian(deep, _prompts(1), SETTINGS, progress=False).lens(deep).save(tmp_path / "d.pt")
    with pytest.raises(LensLabError, match=r"n_layers=4 does not fit tiny-gpt2 \(3 blocks"):
        JacobianLens.load(tmp_path / "d.pt", gpt2)
    wide = ModelAdapter(build_tiny("gpt2", n_embd=48), tiny_tokenizer(), name="wide")
    fit_jacobian(wide, _prompts(1), SETTINGS, progress=False).lens(wide).save(tmp_path / "w.pt")
    with pytest.raises(LensLabError, match=r"d_model=48 does not match tiny-gpt2 \(d_model=32\)"):
        JacobianLens.load(tmp_path / "w.pt", gpt2)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(LensLabError, match="not a J-lens artifact"):
        JacobianLens.load(tmp_path / "x.pt", gpt2)


def test_a_model_the_gate_rules_out_is_refused():
    # the final norm mapped to a block's input norm: lens_final fails, so no lens of any kind
    model = build_tiny("gpt2")
    bad = ModelAdapter(model, tiny_tokenizer(), arch={"final_norm": "transformer.h.0.ln_1"})
    with pytest.raises(LensLabError, match="lens_final"):
        fit_jacobian(bad, _prompts(1), SETTINGS, progress=False)
    with pytest.raises(LensLabError, match="lens_final"):
        JacobianLens(bad, {}, n_prompts=0)


def test_the_gate_rules_out_the_jlens_when_the_graph_path_fails(gpt2):
    from lenslab.gate.fidelity import Check

    report = gpt2.fidelity
    report.checks["graph_path"] = Check("graph_path", False, 1.0, "broken on purpose")
    with pytest.raises(LensLabError, match="jacobian_lens is ruled out.*graph_path"):
        fit_jacobian(gpt2, _prompts(1), SETTINGS, progress=False)


def test_prompts_without_a_valid_position_are_refused(gpt2):
    with pytest.raises(LensLabError, match="prompt 1 has 4 tokens: no valid position"):
        fit_jacobian(gpt2, [[5] * 12, [5] * 4], SETTINGS, progress=False)
    # short prompts fit once skip_first is lowered
    fit = fit_jacobian(gpt2, [[5, 6, 7, 8]], FitSettings(skip_first=1), progress=False)
    assert fit.n_prompts == 1


def test_resume_from_a_checkpoint_gives_the_same_jacobian(gpt2, tmp_path, monkeypatch):
    prompts = _prompts(4)
    full = fit_jacobian(gpt2, prompts, SETTINGS, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    real, calls = jl.prompt_jacobian, []

    def crash_at_third(adapter, ids, settings, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(adapter, ids, settings, **kw)

    monkeypatch.setattr(jl, "prompt_jacobian", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        fit_jacobian(gpt2, prompts, SETTINGS, checkpoint=ckpt, checkpoint_every=1, progress=False)
    monkeypatch.setattr(jl, "prompt_jacobian", real)
    _, index = JacobianFit.load(ckpt)
    assert index == 2
    resumed = fit_jacobian(gpt2, prompts, SETTINGS, checkpoint=ckpt, checkpoint_every=1)
    assert resumed.n_prompts == 4
    for r in full.sums:
        assert torch.equal(resumed.sums[r], full.sums[r])
    # a checkpoint of other prompts is not resumed from
    other = fit_jacobian(gpt2, prompts[:2], SETTINGS, checkpoint=ckpt, progress=False)
    assert other.n_prompts == 2


@pytest.mark.skipif(
    importlib.util.find_spec("transformer_lens") is None,
    reason="transformer_lens is not importable (install transformer-lens 4.3.0 to check interop)",
)
def test_transformer_lens_loads_a_lenslab_artifact_with_the_same_readout(tmp_path):
    from lenslab.gate import load_model
    from lenslab.lenses.jacobian_interop import tl_readout_agreement
    from lenslab.models.tiny import save_tiny

    save_tiny("gpt2", tmp_path / "model")
    cfg = {"name": "tiny-gpt2", "source": str(tmp_path / "model"), "dtype": "float32"}
    adapter = load_model(cfg)
    lens = fit_jacobian(adapter, _prompts(2), SETTINGS, progress=False).lens(adapter)
    lens.save(tmp_path / "lens.pt")
    err = tl_readout_agreement(adapter, tmp_path / "lens.pt", _prompts(1)[0])
    assert err < 1e-5
    # and the check can fail: another lens's matrices read by TransformerLens differ
    other = fit_jacobian(adapter, _prompts(2, seed=5), SETTINGS, progress=False).lens(adapter)
    other.save(tmp_path / "other.pt")
    ours = JacobianLens.load(tmp_path / "lens.pt", adapter)
    assert not torch.equal(
        ours.matrices[1], JacobianLens.load(tmp_path / "other.pt", adapter).matrices[1]
    )


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_the_cached_prefix_gives_the_same_jacobian_as_whole_prompts(arch):
    adapter = ModelAdapter(build_tiny(arch), tiny_tokenizer(), name=arch)
    ids = _prompts(1, length=14)[0]
    cached = jl.prompt_jacobian(adapter, ids, SETTINGS)
    whole = jl.prompt_jacobian(
        adapter, ids, FitSettings(skip_first=3, dim_batch=6, prefix_cache=False)
    )
    for r in whole:
        assert torch.allclose(cached[r], whole[r], atol=1e-5), r
    assert jl._check_prefix_cache(adapter, ids, SETTINGS).prefix_cache


def test_a_model_whose_cached_run_differs_fits_whole_prompts(gpt2, monkeypatch):
    real = jl._states_with_graph

    def broken(adapter, ids, prefix=0):
        states = real(adapter, ids, prefix)
        return [s + 1.0 for s in states] if prefix else states

    monkeypatch.setattr(jl, "_states_with_graph", broken)
    assert not jl._check_prefix_cache(gpt2, _prompts(1)[0], SETTINGS).prefix_cache


def test_settings_are_validated():
    from lenslab.lenses.jacobian_config import parse_jacobian_settings

    assert parse_jacobian_settings({}).fit.skip_first == 16
    with pytest.raises(LensLabError, match="window needs a valid position"):
        parse_jacobian_settings({"fit": {"seq_len": 17}})
    with pytest.raises(LensLabError, match=r"unknown jacobian_lens.fit setting\(s\) \['skip'\]"):
        parse_jacobian_settings({"fit": {"skip": 1}})
    with pytest.raises(LensLabError, match="is not a bool"):
        parse_jacobian_settings({"fit": {"skip_last": 1}})


def test_the_comparison_scores_an_identity_jlens_as_the_logit_lens(gpt2):
    from lenslab.lenses.jacobian_config import JEvalSettings
    from lenslab.lenses.jacobian_eval import compare_lenses

    eye = JacobianLens(gpt2, {r: torch.eye(gpt2.d_model) for r in range(gpt2.n_layers)}, 1)
    fitted = fit_jacobian(gpt2, _prompts(2), SETTINGS, progress=False).lens(gpt2)
    windows = torch.tensor(_prompts(6, length=10, seed=3))
    lenses = {"logit": LogitLens(gpt2), "identity": eye, "jacobian": fitted}
    table = compare_lenses(gpt2, lenses, windows, JEvalSettings(bootstrap=50))
    wide = {
        m: table[table.metric == m].pivot(index="layer", columns="lens", values="value")
        for m in ("kl", "top1")
    }
    assert (wide["kl"]["identity"] == wide["kl"]["logit"]).all()
    assert (wide["top1"]["identity"] == wide["top1"]["logit"]).all()
    last = gpt2.n_layers
    assert wide["top1"].loc[last].eq(1.0).all() and wide["kl"].loc[last].abs().max() < 1e-6
    assert not (wide["kl"]["jacobian"].iloc[1:last] == wide["kl"]["logit"].iloc[1:last]).all()
    assert table[table.metric == "top1"].ci_low.le(table[table.metric == "top1"].value).all()


def test_a_damaged_checkpoint_is_ignored(gpt2, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"not a torch file")
    fit = fit_jacobian(gpt2, _prompts(2), SETTINGS, checkpoint=ckpt, progress=False)
    assert fit.n_prompts == 2
