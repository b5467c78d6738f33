"""Devices and precision: a clear error when CUDA is asked for and absent, accelerate's
device_map path, and half-precision models whose statistics accumulate in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenslab.devices import check_device, placement
from lenslab.errors import LensLabError
from lenslab.extract import extract
from lenslab.gate import load_model
from lenslab.lenses.logit import LogitLens
from lenslab.models.tiny import save_tiny
from lenslab.prompts import encode_set
from lenslab.stats.lens_stats import apply_lens, parse_lens_config

PROMPTS = {
    "name": "toy",
    "prompts": [
        {"id": "a", "text": "w1 w2 w3 w4 w5 w6 w7", "answer": "w9", "targets": ["w9", "w10"]},
        {"id": "b", "text": "w11 w2 w13 w4", "answer": "w10"},
    ],
}
NO_GPU = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny("gpt2", tmp_path_factory.mktemp("tiny") / "gpt2")


def _cfg(path, **kw):
    return {"name": "tiny", "source": str(path), "dtype": "float32", "device": "cpu", **kw}


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_dir, monkeypatch) -> None:
    for device in ("cuda", "cuda:0"):
        with pytest.raises(LensLabError, match="no CUDA GPU.*Fix: .*device: cpu"):
            check_device(device)
    # the check comes before loading: nothing is read, nothing falls back to the CPU
    import lenslab.models.load as load

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded although CUDA is absent")

    monkeypatch.setattr(load.AutoModelForCausalLM, "from_pretrained", never)
    with pytest.raises(LensLabError, match="no CUDA GPU"):
        load_model(_cfg(tiny_dir, device="cuda"))
    with pytest.raises(LensLabError, match="no CUDA GPU"):
        load_model(_cfg(tiny_dir, device="cuda", device_map="auto"))


def test_bad_devices_and_maps_are_clear_errors() -> None:
    for device in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(LensLabError, match="not cpu, cuda"):
            check_device(device)
    with pytest.raises(LensLabError, match="accelerate placement"):
        check_device("cpu", "everywhere")
    assert check_device(None) == "cpu"
    assert placement("cpu", None) == {}
    cpu_only = placement("cpu", "auto")
    assert cpu_only["device_map"] == "auto" and list(cpu_only["max_memory"]) == ["cpu"]


def test_device_map_path_gives_the_plain_models_states(tiny_dir, monkeypatch) -> None:
    import lenslab.models.load as load

    plain = load_model(_cfg(tiny_dir))
    seen = {}
    original = load.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(load.AutoModelForCausalLM, "from_pretrained", spy)
    mapped = load_model(_cfg(tiny_dir, device_map="auto"))  # accelerate, CPU memory only
    assert seen["device_map"] == "auto" and list(seen["max_memory"]) == ["cpu"]
    assert {p.device.type for p in mapped.model.parameters()} == {"cpu"}
    enc = encode_set(plain.tokenizer, PROMPTS)
    a = extract(plain, enc, batch_size=2, progress=False)
    b = extract(mapped, enc, batch_size=2, progress=False)
    for x, y in zip(a.resid, b.resid, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_bfloat16_model_statistics_accumulate_in_float32(tiny_dir) -> None:
    half = load_model(_cfg(tiny_dir, dtype="bfloat16"))
    assert half.unembed.weight.dtype == torch.bfloat16
    # the float32 reference: the same bfloat16-rounded weights, computed in float32
    ref = load_model(_cfg(tiny_dir))
    ref.model.load_state_dict({k: v.float() for k, v in half.model.state_dict().items()})
    cfg = parse_lens_config({})
    tables = {}
    for name, adapter in (("half", half), ("ref", ref)):
        enc = encode_set(adapter.tokenizer, PROMPTS)
        acts = extract(adapter, enc, batch_size=2, progress=False)
        assert all(r.dtype == torch.float32 for r in acts.resid)  # stored in float32
        assert adapter.decode(acts.resid[0][-1]).dtype == torch.float32
        tables[name], _ = apply_lens(LogitLens(adapter), acts, enc, cfg)
    half_t, ref_t = tables["half"], tables["ref"]
    last = half_t.layer == half_t.layer.max()
    assert (half_t.loc[last, "kl_final"] == 0).all()  # the final layer is the model's output
    for col in ("entropy", "kl_final", "xent_next"):
        assert half_t[col].dtype in (np.float32, np.float64)
        assert np.isfinite(half_t[col].dropna()).all()
        # bfloat16 keeps 8 bits of mantissa: states differ by ~1%, statistics by little more
        diff = np.abs(half_t[col].to_numpy() - ref_t[col].to_numpy())
        assert np.nanmax(diff) < 0.1 * max(1.0, np.nanmax(np.abs(ref_t[col]))), col
    probs = torch.softmax(half.decode(torch.randn(3, half.d_model)), -1).sum(-1)
    torch.testing.assert_close(probs, torch.ones(3), atol=1e-6, rtol=0)
