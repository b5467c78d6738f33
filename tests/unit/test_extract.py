"""Extraction: batching is invisible, files round-trip, damage is detected, writes are atomic."""

import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.extract import extract, load_activations, load_tokens, save_activations
from lenslab.io import atomic_path
from lenslab.prompts import encode_prompt

TEXTS = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10", "w11", "w12 w13 w14 w15", "w1 w2 w3 w4 w5"]


def _prompts(tokenizer):
    return [encode_prompt(tokenizer, {"id": f"p{i}", "text": t}) for i, t in enumerate(TEXTS)]


def test_batched_equals_one_at_a_time(tiny_adapter):
    prompts = _prompts(tiny_adapter.tokenizer)
    batched = extract(tiny_adapter, prompts, batch_size=4, progress=False)
    single = extract(tiny_adapter, prompts, batch_size=1, progress=False)
    for a, b, p in zip(batched.resid, single.resid, prompts, strict=True):
        assert a.shape == (tiny_adapter.n_layers + 1, len(p.input_ids), 32)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_states_equal_a_direct_forward(gpt2_adapter):
    prompts = _prompts(gpt2_adapter.tokenizer)
    acts = extract(gpt2_adapter, prompts, batch_size=8, progress=False)
    ids = torch.tensor([prompts[1].input_ids])
    with torch.no_grad():
        hf = gpt2_adapter.model(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts.resid[1][3 - 1], hf[2][0], atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path, gpt2_adapter):
    acts = extract(gpt2_adapter, _prompts(gpt2_adapter.tokenizer), progress=False)
    acts.meta = {"model": "tiny"}
    save_activations(acts, tmp_path, gpt2_adapter.tokenizer)
    back = load_activations(tmp_path / "resid.safetensors")
    assert back.prompt_ids == acts.prompt_ids and back.meta == {"model": "tiny"}
    for a, b in zip(acts.resid, back.resid, strict=True):
        assert torch.equal(a, b)
    tokens = load_tokens(tmp_path)
    assert len(tokens) == sum(len(t.split()) for t in TEXTS)
    assert tokens.iloc[0].to_dict() == {
        "prompt_id": "p0",
        "prompt_index": 0,
        "position": 0,
        "token_id": 5,
        "token": "w1",
    }


def test_same_input_same_bytes(tmp_path, gpt2_adapter):
    prompts = _prompts(gpt2_adapter.tokenizer)
    for name in ("a", "b"):
        save_activations(extract(gpt2_adapter, prompts, progress=False), tmp_path / name)
    for f in ("resid.safetensors", "tokens.parquet"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_corrupt_file_is_a_clear_error(tmp_path, gpt2_adapter):
    save_activations(
        extract(gpt2_adapter, _prompts(gpt2_adapter.tokenizer), progress=False), tmp_path
    )
    path = tmp_path / "resid.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LensLabError, match="delete it and rerun snakemake"):
        load_activations(tmp_path)


def test_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_tensor_files_are_byte_stable_across_processes(tmp_path):
    """safetensors orders several header keys by hash, which differs per process."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from lenslab.io import write_tensors; "
        "write_tensors({'a': torch.arange(3.)}, sys.argv[1], "
        "{'model': 'm', 'prompt_ids': ['p'], 'prompts': 's', 'model_config': '{}'})"
    )
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_prompt_longer_than_the_context_is_a_clear_error(gpt2_adapter):
    long = encode_prompt(gpt2_adapter.tokenizer, {"id": "long", "text": " ".join(["w1"] * 65)})
    with pytest.raises(
        LensLabError, match="'long' is 65 tokens, longer than the model's context of 64"
    ):
        extract(gpt2_adapter, [long], progress=False)
