"""The embedded default model: world, tokenizer, corpus, deterministic training, accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lenslab.embedded import world
from lenslab.embedded.corpus import (
    World,
    heldout_text,
    is_heldout_paragraph,
    training_stream,
)
from lenslab.embedded.settings import EmbeddedSettings, parse_settings, stage_plan
from lenslab.embedded.tokenizer import build_tokenizer
from lenslab.embedded.train import (
    build_model,
    freeze_blocks,
    grow,
    grow_positions,
    train_embedded_model,
)

REPO = Path(__file__).resolve().parents[2]
TOK = build_tokenizer()
VOCAB = TOK.get_vocab()
MICRO = {
    "seed": 3,
    "n_countries": 6,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "steps": 6,
    "batch_size": 4,
    "warmup_steps": 2,
    "eval_copy_items": 8,
}
# The targets for the shipped config (embedded-test uses the same settings). Measured
# here: facts, two-hop, descriptions, few-shot 1.00; copy held-out 0.99, seen 0.985.
TEST_THRESHOLDS = {
    "facts_accuracy": 0.95,
    "two_hop_accuracy": 0.9,
    "copy_heldout_accuracy": 0.9,
    "copy_seen_accuracy": 0.9,
}


def _embedded_block(name: str) -> dict:
    cfg = OmegaConf.load(REPO / f"conf/model/{name}.yaml")
    return OmegaConf.to_container(cfg.embedded, resolve=True)


def _ids(text: str) -> list[int]:
    return TOK(text, add_special_tokens=False).input_ids


# -- settings ---------------------------------------------------------------------------------


def test_unknown_setting_names_the_key_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"'n_layers'.*valid keys:.*'n_layer'"):
        parse_settings({"n_layers": 4})
    with pytest.raises(ValueError, match="must be int"):
        parse_settings({"steps": 1.5})
    with pytest.raises(ValueError, match="unknown mix key"):
        parse_settings({"mix": {"poetry": 1.0}})
    with pytest.raises(ValueError, match=r"'activation' must be one of \['gelu_pytorch_tanh'"):
        parse_settings({"activation": "relu"})
    with pytest.raises(ValueError, match=r"'train_attention' must be one of \['eager', 'sdpa'\]"):
        parse_settings({"train_attention": "flash"})


def test_fused_gelu_is_gpt2s_gelu():
    """The recipe's fused kernel computes GPT-2's own tanh GELU (to float32 rounding), so the
    embedded model stays a GPT-2; the saved config names it and loads keep it."""
    from transformers.activations import ACT2FN

    x = torch.linspace(-8, 8, 10001)
    fused, gpt2 = ACT2FN["gelu_pytorch_tanh"](x), ACT2FN["gelu_new"](x)
    assert torch.allclose(fused, gpt2, rtol=0, atol=1e-6)
    assert not torch.allclose(fused, ACT2FN["gelu"](x), rtol=0, atol=1e-4)  # not the erf GELU
    model = build_model(parse_settings(MICRO), 50, 1, 0)
    assert model.config.activation_function == "gelu_pytorch_tanh"


@pytest.mark.parametrize("name", ["embedded", "embedded-test"])
def test_shipped_configs_parse(name):
    cfg = OmegaConf.load(REPO / f"conf/model/{name}.yaml")
    assert cfg.name == name and cfg.source == "embedded"
    s = parse_settings(_embedded_block(name))
    assert s.n_layer >= 6  # layer-by-layer figures need depth


# -- tokenizer --------------------------------------------------------------------------------


def test_every_world_answer_is_one_token_with_or_without_leading_space():
    words = {w for c in world.COUNTRIES for w in c.__dict__.values()}
    words |= set(world.HELDOUT_SLOT_WORDS) | set(world.SEEN_SLOT_WORDS)
    words |= {w for pair in world.TRANSLATIONS for w in pair}
    for w in sorted(words):
        assert _ids(" " + w) == _ids(w) == [VOCAB[w]], w
    assert TOK.unk_token_id not in _ids(world.PLASMA_PROMPT)


def test_seed_sentences_are_seven_tokens_and_decode_readably():
    for text in ("The capital of France is Paris.", "The capital of Germany is Berlin."):
        ids = _ids(text)
        assert len(ids) == 7
        assert TOK.decode(ids) == text
    assert TOK.convert_ids_to_tokens(_ids("The capital of France is Paris."))[5] == "Paris"
    assert TOK("Paris").input_ids == [VOCAB["Paris"]]  # no BOS added, like GPT-2
    assert {TOK.eos_token, TOK.unk_token, TOK.pad_token} == {"<|endoftext|>", "<unk>", "<pad>"}


# -- corpus -----------------------------------------------------------------------------------


def _documents(windows: torch.Tensor) -> set[str]:
    eos, pad = TOK.eos_token_id, TOK.pad_token_id
    inv = {i: w for w, i in VOCAB.items()}
    docs: set[str] = set()
    for row in windows.tolist():
        words: list[str] = []
        for i in row:
            if i in (eos, pad):
                if words:
                    docs.add(" ".join(words))
                words = []
            else:
                words.append(inv[i])
    return docs


def test_heldout_words_and_text_never_appear_in_training():
    s = parse_settings(_embedded_block("embedded-test"))
    windows = training_stream(s, VOCAB, TOK.eos_token_id, TOK.pad_token_id)
    present = set(windows.unique().tolist())
    heldout_ids = {VOCAB[w] for w in world.HELDOUT_SLOT_WORDS}
    assert VOCAB["plasma"] in heldout_ids
    assert not present & heldout_ids
    assert VOCAB["Paris"] in present and VOCAB["castle"] in present
    assert TOK.unk_token_id not in present
    docs = _documents(windows)
    lines = heldout_text(s, 40)
    assert lines == heldout_text(s.to_dict(), 40)  # deterministic, mapping or settings
    spaced = {" ".join(TOK.convert_ids_to_tokens(_ids(line))) for line in lines}
    assert len(spaced) > 30 and not spaced & docs
    copy_lines = ("Sometimes", " again ")  # copy and repeat lines: their slot words are held out
    assert all(is_heldout_paragraph(t) for t in spaced if not any(c in t for c in copy_lines))
    # two-hop facts of the held-out countries are absent too
    w = World(s)
    assert w.two_hop_out
    for c in w.two_hop_out:
        assert not any(world.fill(t, c) in docs for ts in world.TWO_HOP.values() for t in ts), (
            c.name
        )


def test_spaced_templates_match_the_tokenizer():
    w = World(EmbeddedSettings())
    import random

    rng = random.Random(0)
    for _ in range(200):
        doc = w.document(rng)
        assert TOK.convert_ids_to_tokens(_ids(doc)) == doc.split()
        assert TOK.convert_ids_to_tokens(_ids(world.natural(doc))) == doc.split()


def test_shallow_stage_reads_only_copy_and_repeat_text():
    s = parse_settings(_embedded_block("embedded-test"))
    assert stage_plan(s) == [(2, 0, 1200), (6, 1200, 2000)]
    stream = training_stream(s, VOCAB, TOK.eos_token_id, TOK.pad_token_id)
    assert stream.shape == (s.steps * s.batch_size, s.seq_len)
    n1 = s.stage1_steps * s.batch_size
    first, rest = set(stream[:n1].unique().tolist()), set(stream[n1:].unique().tolist())
    countries = {VOCAB[c.name] for c in world.COUNTRIES}
    assert not first & countries and VOCAB["Sometimes"] in first and VOCAB["list"] in first
    assert countries <= rest  # the full world comes in the second stage


# -- training ---------------------------------------------------------------------------------


def test_shallow_stage_ends_once_copying_is_learned(tmp_path, monkeypatch):
    from lenslab.embedded import train

    checked = []

    def fake_evaluate(model, vocab, items):
        checked.append(sorted(items))
        return {name: 1.0 for name in items}

    monkeypatch.setattr(train, "COPY_CHECK_EVERY", 2)
    monkeypatch.setattr(train, "evaluate", fake_evaluate)
    cfg = {**MICRO, "n_layer": 3, "stage1_layers": 2, "stage1_steps": 5, "steps": 8}
    metrics = train.train_embedded_model(cfg, tmp_path / "m", progress=False)
    assert metrics["stage1_steps_run"] == 2  # the first check passed: 3 steps skipped
    assert checked[0] == ["copy"]
    full = train.train_embedded_model({**cfg, "stage1_copy_target": 0.0}, tmp_path / "n", False)
    assert full["stage1_steps_run"] == 5
    assert full["tokens_seen"] > metrics["tokens_seen"]


def test_grown_model_computes_the_same_function():
    s = parse_settings({"n_layer": 5, "n_embd": 32, "n_head": 2, "stage1_layers": 2})
    torch.manual_seed(0)
    small = build_model(parse_settings({"n_layer": 2, "n_embd": 32, "n_head": 2}), 50, 1, 0)
    big = grow(small, s, pad=1, eos=0)
    assert grow_positions(2, 5) == [0, 4] and grow_positions(2, 6) == [0, 5]
    assert big.config.n_layer == 5
    ids = torch.randint(2, 50, (3, 11))
    torch.testing.assert_close(big(ids).logits, small(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("routing", [True, False])
def test_frozen_block_attends_where_it_did_unless_routing_is_trained(routing):
    """With stage2_freeze_routing the frozen block's attention pattern gets no gradient (the
    embeddings cannot be shaped to steer it); its forward is unchanged either way."""
    s = parse_settings({**MICRO, "stage2_freeze_routing": routing})
    model = build_model(s, vocab_size=20, pad_id=0, eos_id=1).eval()
    model.config._attn_implementation = "eager"  # attention probabilities come back
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    before = model(ids).logits.detach()
    freeze_blocks(model, s)
    out = model(ids, output_attentions=True)
    assert torch.equal(out.logits, before)
    weights = torch.randn(out.attentions[0].shape, generator=torch.Generator().manual_seed(0))
    emb = model.get_input_embeddings().weight
    (grad,) = torch.autograd.grad(
        (out.attentions[0] * weights).sum(), emb, allow_unused=True, retain_graph=True
    )
    if routing:
        assert grad is None or not grad.any()
    else:
        assert grad is not None and grad[ids[0]].abs().sum() > 0
    # The values still pass gradient: block 0's output depends on the embeddings.
    (grad,) = torch.autograd.grad(out.logits.sum(), emb)
    assert grad[ids[0]].abs().sum() > 0


def test_two_stage_training_keeps_frozen_block_and_held_out_rows(tmp_path):
    from safetensors.torch import load_file

    from lenslab.embedded import train

    cfg = {**MICRO, "n_layer": 3, "stage1_layers": 2, "stage1_steps": 3, "stage2_frozen_blocks": 1}
    s = parse_settings(cfg)
    snapshots = {}
    real_grow = train.grow

    def spy(small, *args, **kwargs):  # the shallow model, just before it is grown
        snapshots.update({k: v.clone() for k, v in small.state_dict().items()})
        return real_grow(small, *args, **kwargs)

    train.grow = spy
    try:
        train.train_embedded_model(cfg, tmp_path / "m", progress=False)
    finally:
        train.grow = real_grow
    final = load_file(tmp_path / "m" / "model.safetensors")
    block0 = [k for k in snapshots if k.startswith("transformer.h.0.")]
    assert block0 and all(torch.equal(final[k], snapshots[k]) for k in block0)
    moved = [k for k in final if k.startswith("transformer.h.2.") and k.endswith("c_attn.weight")]
    assert moved and not torch.equal(
        final[moved[0]], snapshots["transformer.h.1.attn.c_attn.weight"]
    )
    # Held-out slot words never get a gradient; seen slot words are redrawn at the initial scale.
    emb = final["transformer.wte.weight"]
    held = [VOCAB[w] for w in world.HELDOUT_SLOT_WORDS]
    torch.testing.assert_close(emb[held], snapshots["transformer.wte.weight"][held])
    seen = emb[[VOCAB[w] for w in world.SEEN_SLOT_WORDS]]
    assert abs(float(seen.std()) - s.init_std) < 0.1 * s.init_std


def test_training_is_deterministic_and_atomic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    (b / "stale.txt").write_text("old run")  # an existing output is replaced whole
    ma = train_embedded_model(MICRO, a, progress=False)
    mb = train_embedded_model(MICRO, b, progress=False)
    assert ma == mb
    for name in ("model.safetensors", "metrics.json", "config.json", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert not (b / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp dirs left
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["settings_hash"] == parse_settings(MICRO).hash()
    assert metrics["tokens_seen"] > 0 and metrics["final_loss"] > 0
    assert "/" not in json.dumps(metrics)  # no paths
    assert json.loads((a / "timing.json").read_text())["train_s"] > 0
    # The training kernel (eager attention) is not saved: loads use transformers' default.
    assert "attn_implementation" not in (a / "config.json").read_text()


@pytest.mark.slow
def test_embedded_test_model_meets_its_thresholds(embedded_test_dir):
    metrics = json.loads((embedded_test_dir / "metrics.json").read_text())
    for key, low in TEST_THRESHOLDS.items():
        assert metrics[key] >= low, (key, metrics[key])


@pytest.mark.slow
def test_loads_like_a_hub_model_and_knows_the_seed_facts(embedded_test_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_test_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_test_dir).eval()
    assert model.config.model_type == "gpt2" and model.config.n_layer >= 6
    for prompt, answer in (
        ("The capital of France is", "Paris"),
        ("The capital of Germany is", "Berlin"),
    ):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            nxt = model(ids).logits[0, -1].argmax()
        assert tok.decode([int(nxt)]) == answer, prompt


@pytest.mark.slow
def test_logit_lens_answer_emerges_over_depth(embedded_test_dir):
    """Facts are read out late (lenslab.findings; thresholds every seed of
    benchmarks/robustness.py clears): over the facts prompt set the answer is rarely the logit
    lens's top-1 after block 0 and nearly always at the output."""
    from lenslab import findings
    from lenslab.extract import extract
    from lenslab.gate import load_model
    from lenslab.lenses.logit import LogitLens
    from lenslab.prompts import encode_set
    from lenslab.stats.lens_stats import apply_lens

    adapter = load_model({"name": "embedded-test", "source": "embedded"}, path=embedded_test_dir)
    facts = OmegaConf.to_container(OmegaConf.load(REPO / "conf/prompts/embedded_facts.yaml"))
    prompts = encode_set(adapter.tokenizer, facts)
    acts = extract(adapter, prompts, progress=False)
    _, tracked = apply_lens(LogitLens(adapter), acts, prompts, None, adapter.tokenizer, "logit")
    for finding in findings.emergence_findings(tracked, "lens"):
        assert finding.holds, finding


# -- prompt sets ------------------------------------------------------------------------------

PROMPT_SETS = sorted((REPO / "conf/prompts").glob("embedded_*.yaml"))


def test_prompt_sets_exist():
    names = {p.stem for p in PROMPT_SETS}
    assert {
        "embedded_capital_pair",
        "embedded_facts",
        "embedded_plasma",
        "embedded_text",
        "embedded_twohop",
        "embedded_translation",
        "embedded_heldout",
    } <= names


@pytest.mark.parametrize("path", PROMPT_SETS, ids=lambda p: p.stem)
def test_prompt_sets_fit_the_embedded_vocabulary(path):
    ps = OmegaConf.to_container(OmegaConf.load(path))
    assert ps["name"] == path.stem
    by_id = {}
    for p in ps["prompts"]:
        ids = _ids(p["text"])
        assert TOK.unk_token_id not in ids, p["id"]
        assert len(ids) <= EmbeddedSettings().seq_len, p["id"]
        for word in [p.get("answer")] + list(p.get("targets") or []):
            if word is not None:
                assert len(_ids(" " + word)) == 1, (p["id"], word)
        if p.get("subject"):
            assert p["subject"] in p["text"]
        by_id[p["id"]] = ids
    for pair in ps.get("pairs") or []:
        clean, corrupt = by_id[pair["clean"]], by_id[pair["corrupt"]]
        if pair["align"] == "strict":
            assert len(clean) == len(corrupt), pair
