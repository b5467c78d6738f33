"""The adapter maps every architecture onto one residual-stream view."""

import pytest
import torch
from torch import nn

from lenslab.errors import LensLabError
from lenslab.gate import load_model
from lenslab.lenses import LogitLens
from lenslab.models.adapter import ModelAdapter, resolve_arch
from lenslab.models.tiny import build_tiny, save_tiny, tiny_tokenizer

IDS = torch.randint(4, 84, (2, 9), generator=torch.Generator().manual_seed(0))


def test_logit_lens_at_last_layer_is_the_models_logits(tiny_adapter):
    logits, resid = tiny_adapter.run_with_resid(IDS)
    lens = LogitLens(tiny_adapter)
    with torch.no_grad():
        last = lens.logits(resid[-1], tiny_adapter.n_layers)
    torch.testing.assert_close(last, logits, rtol=0, atol=1e-5)


def test_residual_stream_matches_hf_hidden_states(tiny_adapter):
    _, resid = tiny_adapter.run_with_resid(IDS)
    with torch.no_grad():
        hf = tiny_adapter.model(IDS, output_hidden_states=True).hidden_states
    assert resid.shape[0] == len(hf) == tiny_adapter.n_layers + 1
    for layer in range(tiny_adapter.n_layers):
        torch.testing.assert_close(resid[layer], hf[layer], rtol=0, atol=1e-6)
    # HF's last entry is already through the final norm; the adapter keeps resid[L] pre-norm.
    with torch.no_grad():
        torch.testing.assert_close(tiny_adapter.normalize(resid[-1]), hf[-1], rtol=0, atol=1e-5)
    assert not torch.allclose(resid[-1], hf[-1])


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_resid_alone_equals_the_full_forward_states(arch, monkeypatch):
    """``resid`` skips the unembedding at all but one position: the same states, bit for bit,
    and the same again through the fallback for a forward without ``logits_to_keep``."""
    adapter = ModelAdapter(build_tiny(arch), tiny_tokenizer(), name=arch)
    _, full = adapter.run_with_resid(IDS)
    assert torch.equal(adapter.resid(IDS), full)
    forward = adapter.model.forward

    def no_keep(*args, **kwargs):
        if "logits_to_keep" in kwargs:
            raise TypeError("unexpected keyword argument 'logits_to_keep'")
        return forward(*args, **kwargs)

    monkeypatch.setattr(adapter.model, "forward", no_keep)
    assert torch.equal(adapter.resid(IDS), full)


def test_normalize_without_affine_differs_and_is_unit_scale(gpt2_adapter):
    h = torch.randn(3, 32) * 5 + 2
    with torch.no_grad():
        plain = gpt2_adapter.normalize(h, affine=False)
        full = gpt2_adapter.normalize(h, affine=True)
    torch.testing.assert_close(plain.mean(-1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(plain.pow(2).mean(-1), torch.ones(3), atol=1e-3, rtol=0)
    assert not torch.allclose(plain, full)


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_rms_norm_without_affine(arch):
    adapter = ModelAdapter(build_tiny(arch))
    h = torch.randn(4, 32) * 3
    with torch.no_grad():
        plain = adapter.normalize(h, affine=False)
    torch.testing.assert_close(plain.pow(2).mean(-1), torch.ones(4), atol=1e-3, rtol=0)


def test_layer_out_of_range_names_the_range(gpt2_adapter):
    assert gpt2_adapter.check_layer(-1) == 3
    with pytest.raises(LensLabError, match=r"layer 7 is out of range.*0\.\.3"):
        gpt2_adapter.check_layer(7)


def test_unknown_architecture_names_the_missing_parts():
    model = build_tiny("gpt2")
    model.config.model_type = "mystery"
    with pytest.raises(LensLabError, match=r"'mystery' is not mapped.*blocks.*final_norm"):
        resolve_arch(model)
    # ... and the hand mapping it suggests works.
    adapter = ModelAdapter(
        model,
        arch={
            "blocks": "transformer.h",
            "final_norm": "transformer.ln_f",
            "attn": "attn",
            "mlp": "mlp",
        },
    )
    logits, resid = adapter.run_with_resid(IDS)
    with torch.no_grad():
        torch.testing.assert_close(adapter.decode(resid[-1]), logits, rtol=0, atol=1e-5)


def test_unknown_arch_key_is_an_error():
    with pytest.raises(LensLabError, match="unknown arch key"):
        resolve_arch(build_tiny("gpt2"), {"blokcs": "x"})


def test_attn_and_mlp_outputs_sum_to_the_block_update():
    adapter = ModelAdapter(build_tiny("gpt2"))
    seen = {}

    def keep(name):
        def edit(out):
            seen[name] = out.detach().clone()

        return edit

    with (
        adapter.edit_output(adapter.attn(1), keep("attn")),
        adapter.edit_output(adapter.mlp(1), keep("mlp")),
    ):
        _, resid = adapter.run_with_resid(IDS)
    # GPT-2 block: resid[2] = resid[1] + attn + mlp (dropout off in eval mode).
    torch.testing.assert_close(resid[2], resid[1] + seen["attn"] + seen["mlp"], atol=1e-5, rtol=0)


def test_edit_output_replaces_the_state():
    adapter = ModelAdapter(build_tiny("llama"))
    with adapter.edit_output(adapter.blocks[0], lambda out: torch.zeros_like(out)):
        _, resid = adapter.run_with_resid(IDS)
    assert torch.count_nonzero(resid[1]) == 0


def test_load_model_from_a_local_directory(tmp_path):
    path = save_tiny("gpt_neox", tmp_path / "neox")
    adapter = load_model({"name": "neox", "source": str(path), "dtype": "float32"})
    assert adapter.n_layers == 3 and isinstance(adapter.blocks, nn.ModuleList)
    reference = build_tiny("gpt_neox")
    with torch.no_grad():
        torch.testing.assert_close(adapter.forward(IDS), reference(IDS).logits)
    assert adapter.tokenizer(" w3", add_special_tokens=False)["input_ids"] == [7]


def test_load_model_errors_are_readable(tmp_path):
    with pytest.raises(LensLabError, match="cannot load model"):
        load_model({"name": "x", "source": str(tmp_path / "nowhere")})
    with pytest.raises(LensLabError, match="dtype"):
        load_model({"name": "x", "source": str(tmp_path), "dtype": "float8"})
    with pytest.raises(LensLabError, match="embedded model"):
        load_model({"name": "x", "source": "embedded"})


def test_tiny_tokenizer_round_trip():
    tok = tiny_tokenizer()
    assert tok.decode(tok(" w1 w2", add_special_tokens=False)["input_ids"]) == "w1 w2"
