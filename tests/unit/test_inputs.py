"""Checked inputs and precision (issue 15): bad prompt sets and figure options fail before any
job runs with a "problem. Fix: ..." message; every dtype runs the lens, difference and DLA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from lenslab.attribution.dla import completeness_atol, dla_table
from lenslab.config import FigureConfig, load_config
from lenslab.difference import pair_difference, with_final_norm
from lenslab.errors import LensLabError
from lenslab.extract import extract
from lenslab.gate import load_model
from lenslab.lenses.registry import build_lens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.prompts import encode_set
from lenslab.stats.lens_stats import apply_lens, parse_lens_config
from lenslab.validate import unknown_words, validate_study

EMB = "embedded-test"


def check(mutate=None, overrides=()) -> None:
    cfg = load_config("test", list(overrides))
    if mutate is not None:
        mutate(cfg)
    assert validate_study(cfg, {EMB: None}) == []


def test_the_test_study_is_valid():
    check()


def test_prompt_longer_than_the_context_is_refused():
    def long(cfg):
        cfg.prompts.embedded_facts.prompts[0].text = "The capital of France is Paris. " * 12

    with pytest.raises(LensLabError, match=r"embedded_facts/france is 84 tokens.*context.*64"):
        check(long)


@pytest.mark.parametrize("field", ["text", "answer", "targets"])
def test_unknown_word_of_the_embedded_tokenizer_is_named(field):
    def atlantis(cfg):
        prompt = cfg.prompts.embedded_facts.prompts[0]
        if field == "text":
            prompt.text = "The capital of Atlantis is"
        elif field == "answer":
            prompt.answer = "Zurich"
        else:
            prompt.targets = ["Paris", "Zurich"]

    word = "Atlantis" if field == "text" else "Zurich"
    with pytest.raises(LensLabError, match=rf"does not know the word\(s\) \['{word}'\].*<unk>"):
        check(atlantis)


def test_unknown_words_finds_the_pieces():
    from lenslab.embedded.tokenizer import build_tokenizer

    tok = build_tokenizer()
    assert unknown_words(tok, "The capital of Atlantis is Zurich.") == ["Atlantis", "Zurich"]
    assert unknown_words(tok, "The capital of France is Paris.") == []
    assert unknown_words(tiny_tokenizer(), "w1 w2") == []  # no unknown token: nothing to say


def _shorter_corrupt(cfg, align):
    pair = cfg.prompts.embedded_capital_pair
    pair.prompts[1].text = "capital of Germany is Berlin."  # one token shorter
    pair.prompts[1].subject = "Germany"
    pair.pairs[0].align = align


def test_pairs_align_by_their_own_rule():
    check(lambda cfg: _shorter_corrupt(cfg, "right"))  # F1 accepts align: right
    with pytest.raises(LensLabError, match=r"do not align.*align: right"):
        check(lambda cfg: _shorter_corrupt(cfg, "strict"))


def test_f13_refuses_unequal_pairs_for_its_own_reason():
    def f13_pairs(cfg):
        _shorter_corrupt(cfg, "right")
        cfg.study.figures.F13.prompts = ["embedded_capital_pair"]
        for p in cfg.prompts.embedded_capital_pair.prompts:
            p.answer = "is"

    with pytest.raises(LensLabError, match=r"F13 patching needs pairs of equal token counts"):
        check(f13_pairs)


@pytest.mark.parametrize(
    ("fid", "options", "message"),
    [
        ("F1", {"pair": "nope|nada"}, r"pair='nope\|nada' is not a pair.*france\|germany"),
        ("F1", {"colour": "red"}, r"F1: unknown figure option\(s\) \['colour'\].*\['pair'\]"),
        ("F1", {"pair": 3}, r"pair=3 of DifferenceOptions is not a str \| None"),
        ("F2", {"prompt": "atlantis"}, r"prompt 'atlantis' is not a prompt"),
        ("F2", {"max_positions": 0}, r"max_positions.*positive"),
        ("F2", {"lens": "tuned"}, r"lens='tuned' is not an applied lens"),
        ("F2", {"colour": 1}, r"unknown figure option\(s\) \['colour'\]"),
        ("F10", {"heads": True}, r"F10: unknown figure option.*this figure takes no options"),
        ("F11", {"target": "cat : zzzq"}, r"F11: option target has word\(s\) \['zzzq'\]"),
        ("F12", {"max_new_tokens": "5"}, r"max_new_tokens='5' of EntityOptions is not a int"),
        ("F16c", {"widht": 3}, r"F16c: unknown figure option\(s\) \['widht'\]"),
        ("F99", {}, r"unknown figure id 'F99'"),
        ("F13", {"metric": "nope"}, r"metric='nope'"),
        ("F13", {"max_prompts": 0}, r"max_prompts=0 must be >= 1"),
        ("F13", {"prompt_ids": ["france", "atlantis"]}, r"'atlantis' is not a prompt"),
    ],
)
def test_figure_options_are_checked(fid, options, message):
    def set_options(cfg):
        if fid not in cfg.study.figures:  # a figure the test study does not draw
            with open_dict(cfg.study.figures):
                cfg.study.figures[fid] = FigureConfig(prompts=["embedded_facts"])
        cfg.study.figures[fid].options = options

    with pytest.raises(LensLabError, match=message):
        check(set_options)


def test_f15_position_and_layer_ranges():
    def f15(options: str) -> list[str]:
        return [f"+study.figures.F15={{prompts:[embedded_facts],options:{{{options}}}}}"]

    check(overrides=f15("layer:6,position:-5"))  # 6 blocks: layers 0..6; france has 5 tokens
    with pytest.raises(LensLabError, match=r"position=5 is out of range.*-5\.\.4"):
        check(overrides=f15("position:5"))
    with pytest.raises(LensLabError, match=r"layer=7 is out of range.*-7\.\.6"):
        check(overrides=f15("layer:7"))


def test_field_typo_hint_names_the_schema_fields():
    with pytest.raises(LensLabError) as err:
        load_config("test", [f"models.{EMB}.dtyp=float64"])
    text = str(err.value)
    assert f"models.{EMB} has no field 'dtyp'" in text and "'dtype'" in text
    assert f"+models.{EMB}.dtyp" not in text


def test_model_directory_without_tokenizer_files_is_a_clear_error(tmp_path):
    build_tiny("gpt2").save_pretrained(tmp_path)
    with pytest.raises(LensLabError, match=r"has no tokenizer files.*save_pretrained"):
        load_model({"name": "bare", "source": str(tmp_path)})
    tiny_tokenizer().save_pretrained(tmp_path)
    assert load_model({"name": "bare", "source": str(tmp_path)}).tokenizer("w1")["input_ids"]


def test_hub_model_facts_come_from_a_local_directory(tmp_path):
    """A local model directory is checked from its config.json (context) without weights."""
    model = build_tiny("gpt2")
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    n_ctx = json.loads((tmp_path / "config.json").read_text())["n_positions"]
    cfg = OmegaConf.create(
        {
            "study": {"figures": {"F10": {"prompts": ["toy"], "options": {}}}},
            "models": {"tiny": {"name": "tiny", "source": str(tmp_path), "prepend_bos": None}},
            "prompts": {
                "toy": {
                    "prompts": [{"id": "a", "text": " ".join(["w1"] * (n_ctx + 1))}],
                    "pairs": [],
                }
            },
        }
    )
    with pytest.raises(LensLabError, match=rf"{n_ctx + 1} tokens, longer than the context"):
        validate_study(cfg, {"tiny": str(tmp_path)})


# -- precision ------------------------------------------------------------------------------
TOY = {
    "name": "toy",
    "prompts": [
        {"id": "a", "text": "w1 w2 w3 w4", "answer": "w5", "targets": ["w5", "w6"]},
        {"id": "b", "text": "w1 w7 w3 w4", "answer": "w8", "targets": ["w8"]},
    ],
    "pairs": [{"clean": "a", "corrupt": "b", "align": "strict"}],
}


def _adapter(dtype: torch.dtype) -> ModelAdapter:
    torch.manual_seed(0)
    return ModelAdapter(build_tiny("gpt2").to(dtype), tiny_tokenizer(), name=f"gpt2-{dtype}")


def _stages(adapter: ModelAdapter):
    prompts = encode_set(adapter.tokenizer, TOY)
    acts = extract(adapter, prompts)
    lens = build_lens("logit", adapter, None)
    table, _ = apply_lens(lens, acts, prompts, parse_lens_config({}), adapter.tokenizer, "logit")
    dtype = adapter.unembed.weight.dtype
    states = [with_final_norm(r, adapter.normalize, dtype) for r in acts.resid]
    diff = pair_difference(prompts[0], prompts[1], states[0], states[1])
    return table, diff, dla_table(adapter, TOY)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_every_dtype_runs_lens_difference_and_dla(dtype):
    ref_table, ref_diff, ref_dla = _stages(_adapter(torch.float32))
    table, diff, dla = _stages(_adapter(dtype))
    # Same model, rounded weights: the statistics agree with float32 up to the dtype's rounding.
    tol = {torch.float64: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    for col in ("kl_final", "entropy"):
        assert table[col].notna().all()
        torch.testing.assert_close(
            torch.tensor(table[col].to_numpy()), torch.tensor(ref_table[col].to_numpy()),
            atol=tol * 10, rtol=tol,
        )  # fmt: skip
    torch.testing.assert_close(
        torch.tensor(diff.l2.to_numpy()), torch.tensor(ref_diff.l2.to_numpy()), atol=tol, rtol=tol
    )
    assert (diff[diff.position == 0].l2 == 0).all()  # a shared prefix is exactly zero
    assert len(dla) == len(ref_dla)


def test_dla_tolerance_scales_with_the_dtype():
    assert completeness_atol(torch.float32) == completeness_atol(torch.float64) == 1e-3
    assert completeness_atol(torch.float16) == pytest.approx(4 * 2**-10)
    assert completeness_atol(torch.bfloat16) == pytest.approx(4 * 2**-7)


# -- the fault catalogue: each bad input is a clear error before any job runs --------------------
def test_launch_checks():
    from lenslab.pipeline import check_launch, is_dry_run, overrides_list

    here = Path.cwd()
    with pytest.raises(LensLabError, match=r"unknown --config key\(s\) \['studdy'\].*study=test"):
        check_launch({"studdy": "test"}, here, here)
    with pytest.raises(LensLabError, match=r"a target after --config\? targets go before it"):
        check_launch({"results/default/report.html": None}, here, here)
    with pytest.raises(LensLabError, match=r"not in the project directory.*Fix: cd "):
        check_launch({"study": "test"}, here, here / "src")
    check_launch({"study": "test"}, here, here / "src", chosen_dir=True)  # --directory is fine
    assert overrides_list("models.embedded.dtype=float64") == ["models.embedded.dtype=float64"]
    assert overrides_list(["a=1", "b=2"]) == ["a=1", "b=2"] and overrides_list(None) == []
    with pytest.raises(LensLabError, match="neither a list nor one override"):
        overrides_list({"a": 1})
    assert is_dry_run(["snakemake", "-np"]) and is_dry_run(["snakemake", "--dry-run"])
    assert not is_dry_run(["snakemake", "--cores", "2", "-p"])


def test_an_empty_prompt_set_is_refused():
    def empty(cfg):
        cfg.prompts.embedded_facts.prompts = []

    with pytest.raises(LensLabError, match=r"prompt set embedded_facts has no prompts.*F10"):
        check(empty)


def test_an_uncached_hub_model_offline_is_refused_unless_dry(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    cfg = load_config("paper", [])
    with pytest.raises(LensLabError, match=r"model 'gpt2' .* not in the local Hugging Face cache"):
        validate_study(cfg, {m: cfg.models[m].source for m in cfg.models})
    paths = {m: cfg.models[m].source for m in cfg.models}
    assert validate_study(cfg, paths, need_models=False) == list(cfg.models)  # a dry run plans


def test_a_gpu_asked_for_is_checked_up_front():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(LensLabError, match=r"device 'cuda' was asked for.*no CUDA GPU"):
        check(overrides=["models.embedded-test.device=cuda"])
    cfg = load_config("test", ["models.embedded-test.device=cuda"])
    validate_study(cfg, {EMB: None}, check_devices=False)  # jobs on cluster nodes: not here


def test_a_corrupt_weights_file_names_the_file_and_the_fix(tmp_path):
    from lenslab.gate import load_model
    from lenslab.models.tiny import save_tiny

    model_dir = tmp_path / "tiny"
    save_tiny("gpt2", model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(b"\xff" * 64)  # a header length far beyond the file
    with pytest.raises(
        LensLabError, match=r"model\.safetensors cannot be read.*corrupt.*Fix: delete"
    ):
        load_model({"name": "tiny", "source": str(model_dir)})


def test_float16_dla_misses_name_the_precision(monkeypatch):
    """In half precision a completeness miss with a sound map is rounding: the error says so
    (and asks for float32) instead of blaming the architecture map."""
    from lenslab.attribution import dla
    from lenslab.models.adapter import ModelAdapter
    from lenslab.models.tiny import build_tiny, tiny_tokenizer

    adapter = ModelAdapter(build_tiny("gpt2").to(torch.float16), tiny_tokenizer(), name="half")
    with pytest.raises(
        LensLabError, match=r"torch.float16 rounding.*Fix: run direct logit .*float32"
    ):
        dla.direct_logit_attribution(adapter, [5, 6, 7, 8], {"a": 3, "b": 4}, atol=1e-9)
