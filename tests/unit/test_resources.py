"""Per-job resources from model configs (lenslab.resources) and their use by the workflow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from lenslab.config import load_config, to_plain
from lenslab.embedded.settings import parse_settings
from lenslab.embedded.tokenizer import vocabulary
from lenslab.embedded.train import build_model
from lenslab.errors import LensLabError
from lenslab.resources import (
    EMBEDDED_VOCAB,
    KNOWN_SHAPES,
    LIGHT_MB,
    gpt2_params,
    model_shape,
    resources,
    threads,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paper():
    return to_plain(load_config("paper"))


@pytest.fixture(scope="module")
def test_study():
    return to_plain(load_config("test"))


def _numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_gpt2_parameter_formula_counts_a_real_model() -> None:
    config = GPT2Config(vocab_size=101, n_positions=40, n_embd=48, n_layer=3, n_head=4)
    assert gpt2_params(3, 48, 101, 40) == _numel(GPT2LMHeadModel(config))
    # the published sizes: GPT-2 small 124M, GPT-2 XL 1.56B
    assert KNOWN_SHAPES["openai-community/gpt2"].n_params == gpt2_params(12, 768, 50257, 1024)
    assert KNOWN_SHAPES["openai-community/gpt2-xl"].n_params == gpt2_params(48, 1600, 50257, 1024)


def test_embedded_shape_matches_the_model_it_trains(test_study) -> None:
    cfg = test_study["models"]["embedded-test"]
    assert len(vocabulary()) == EMBEDDED_VOCAB
    settings = parse_settings(cfg["embedded"])
    model = build_model(settings, EMBEDDED_VOCAB, pad_id=0, eos_id=1)
    shape = model_shape(cfg)
    assert shape.n_params == _numel(model)
    assert (shape.n_layer, shape.d_model) == (settings.n_layer, settings.n_embd)


def test_local_directory_shape_from_its_config_json(tmp_path) -> None:
    config = GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path)
    shape = model_shape({"name": "m", "source": str(tmp_path)})
    assert shape.n_params == _numel(model) and shape.vocab == 300 and shape.n_layer == 2


def test_a_1p5b_model_asks_for_more_than_the_embedded_model(paper, test_study) -> None:
    xl = paper["models"]["gpt2-xl"]
    small = paper["models"]["gpt2"]
    embedded = test_study["models"]["embedded-test"]
    prompts = paper["prompts"]["capital_facts"]
    lens = paper["lens"]
    for kind, settings in (("extract", None), ("lens", lens), ("patching", paper["patching"])):
        r_xl = resources(kind, xl, prompts, settings)
        r_small = resources(kind, small, prompts, settings)
        r_emb = resources(kind, embedded, prompts, settings)
        assert r_xl["mem_mb"] > r_small["mem_mb"] > r_emb["mem_mb"], kind
        # the float32 weights alone are 1.56e9 x 4 bytes = 5941 MiB
        assert r_xl["mem_mb"] > 5941, kind
        assert r_xl["runtime"] >= r_emb["runtime"] and r_xl["gpu"] == 0
    figure = resources("light")
    assert figure["mem_mb"] == LIGHT_MB < resources("extract", embedded, prompts)["mem_mb"]
    assert figure["gpu"] == 0
    # half precision halves the weights, so it needs less; a retry asks for twice as much
    half = resources("extract", {**xl, "dtype": "bfloat16"}, prompts)
    assert half["mem_mb"] < resources("extract", xl, prompts)["mem_mb"]
    again = resources("extract", xl, prompts, attempt=2)
    assert again["mem_mb"] >= 2 * resources("extract", xl, prompts)["mem_mb"] - 100


def test_start_up_bound_jobs_take_one_core(paper, test_study, monkeypatch) -> None:
    """The embedded model's jobs compute for well under a second: one scheduler core each, so
    two run side by side; GPT-2 XL's jobs and training take the torch thread count."""
    monkeypatch.delenv("LENSLAB_THREADS", raising=False)
    embedded, xl = test_study["models"]["embedded-test"], paper["models"]["gpt2-xl"]
    prompts = paper["prompts"]["capital_facts"]
    for kind, settings in (("extract", None), ("lens", paper["lens"]), ("forward", None)):
        assert threads(kind, embedded, prompts, settings) == 1, kind
        assert threads(kind, xl, prompts, settings) == 2, kind
    assert threads("train_embedded", embedded, None, embedded["embedded"]) == 2
    assert threads("light") == 1
    monkeypatch.setenv("LENSLAB_THREADS", "4")
    assert threads("extract", xl, prompts) == 4


def test_more_prompts_in_a_job_need_more_memory(paper) -> None:
    xl, prompts = paper["models"]["gpt2-xl"], paper["prompts"]["capital_facts"]
    one = resources("extract", xl, prompts, n_prompts=1)["mem_mb"]
    many = resources("extract", xl, prompts, n_prompts=10_000)["mem_mb"]
    # 10,000 prompts x 49 states x T x 1600 floats: tens of gigabytes more
    assert many - one > 10_000
    # a patching shard of 3 of the 6 pairs is asked half the time of the whole set (CPU)
    patching = paper["patching"]
    whole = resources("patching", xl, prompts, patching)["runtime"]
    half = resources("patching", xl, prompts, patching, n_prompts=3)["runtime"]
    assert half < whole <= 2 * half + 1


def test_gpu_requests_follow_the_device(paper) -> None:
    xl, prompts = paper["models"]["gpt2-xl"], paper["prompts"]["capital_facts"]
    assert resources("extract", {**xl, "device": "cuda"}, prompts)["gpu"] == 1
    assert resources("extract", {**xl, "device": "cuda", "gpus": 4}, prompts)["gpu"] == 4
    cpu = resources("patching", xl, prompts, paper["patching"])["runtime"]
    gpu = resources("patching", {**xl, "device": "cuda"}, prompts, paper["patching"])["runtime"]
    assert gpu < cpu


def test_unknown_models_and_kinds_are_clear_errors(paper) -> None:
    with pytest.raises(LensLabError, match="shape:"):
        model_shape({"name": "x", "source": "nobody/unknown-model-xyz"})
    given = {"name": "x", "source": "nobody/unknown-model-xyz",
             "shape": {"n_params": 1_500_000_000, "n_layer": 48, "d_model": 1600, "vocab": 50257}}  # fmt: skip
    assert resources("extract", given, paper["prompts"]["capital_facts"])["mem_mb"] > 5941
    with pytest.raises(LensLabError, match="job kind"):
        resources("nonsense", paper["models"]["gpt2"])


@pytest.mark.slow
def test_workflow_rules_request_the_computed_resources(tmp_path) -> None:
    """The paper study's dry run: each model rule carries lenslab.resources' values, figure
    rules carry none (the profile's small defaults apply)."""
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
         "-n", "--directory", str(tmp_path), "--config", "study=paper"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    mem = {}
    for block in (out.stdout + out.stderr).split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        wildcards = re.search(r"wildcards: ([^\n]*)", block)
        value = re.search(r"resources: [^\n]*mem_mb=(\d+)", block)
        key = (rule, wildcards.group(1) if wildcards else "")
        mem[key] = int(value.group(1)) if value else None
    extract = {w: m for (r, w), m in mem.items() if r == "extract"}
    xl = [m for w, m in extract.items() if "model=gpt2-xl," in w]
    small = [m for w, m in extract.items() if "model=gpt2," in w]
    assert xl and small and min(xl) > max(small) and min(xl) > 5941
    # every rule that loads the model asks for its memory, not the light default (the scale
    # study measured 7.2 GiB for F11's patchscopes and 6.8 GiB for F7's figure at GPT-2-XL shape)
    for rule in (
        "patchscope_identity",
        "patchscope_entities",
        "attribute_lens",
        "lens_beam",
        "figure_F7",
    ):
        asked = [m for (r, w), m in mem.items() if r == rule and "model=gpt2-xl," in w]
        assert asked and min(asked) > 5941, rule
    figures = [m for (r, _), m in mem.items() if r.startswith("figure_") and r != "figure_F7"]
    assert figures and all(m is None for m in figures)
