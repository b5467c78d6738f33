"""Config composition and validation: a typo is an error that names the field."""

import pytest

from lenslab.config import available, canonical_json, load_config
from lenslab.errors import LensLabError


def test_every_study_composes_and_validates():
    for study in available("study"):
        cfg = load_config(study)
        assert cfg.study.name == study
        assert cfg.models, f"study {study} loads no model"
        for fid, fig in cfg.study.figures.items():
            assert fig.prompts, f"{study}: figure {fid} names no prompt set"


def test_every_model_config_validates():
    for name in available("model"):
        cfg = load_config("default", [f"+model@models.probe={name}"])
        model = cfg.models.probe
        assert model.name == name
        if model.source == "gguf":  # pinned by its wheel's version and sha256 or a hub revision
            assert model.gguf.sha256 or model.gguf.revision, f"{name}: pin the GGUF file"
        else:
            assert model.source == "embedded" or model.revision, f"{name}: pin a revision"


def test_hydra_override_changes_one_model():
    base = load_config("default")
    changed = load_config("default", ["models.embedded.batch_size=3"])
    assert changed.models.embedded.batch_size == 3
    assert canonical_json(changed.models.embedded) != canonical_json(base.models.embedded)
    assert canonical_json(changed.prompts) == canonical_json(base.prompts)


def test_adding_a_model_is_one_override():
    cfg = load_config("default", ["+model@models.gpt2=gpt2"])
    assert set(cfg.models) == {"embedded", "gpt2"}
    assert cfg.models.gpt2.source == "openai-community/gpt2"


def test_misspelt_field_is_named():
    with pytest.raises(LensLabError, match="dtyp"):
        load_config("default", ["+models.embedded.dtyp=float32"])


def test_bad_dtype_is_named():
    with pytest.raises(LensLabError, match=r"models\.embedded\.dtype='float8'"):
        load_config("default", ["models.embedded.dtype=float8"])


def test_unknown_study_lists_the_choices():
    with pytest.raises(LensLabError, match="unknown study 'papr'.*default"):
        load_config("papr")


def test_unknown_model_config_lists_the_choices():
    with pytest.raises(LensLabError, match=r"(?s)gpt3.*gpt2"):
        load_config("default", ["+model@models.gpt3=gpt3"])


def test_pair_naming_a_missing_prompt_is_an_error():
    with pytest.raises(LensLabError, match="unknown prompt id 'nowhere'"):
        load_config("paper", ["prompts.capital_pair.pairs.0.corrupt=nowhere"])


def test_compute_threads_come_from_the_environment_not_the_scheduler(monkeypatch):
    from lenslab.runtime import compute_threads

    monkeypatch.delenv("LENSLAB_THREADS", raising=False)
    assert compute_threads() == 2
    monkeypatch.setenv("LENSLAB_THREADS", "3")
    assert compute_threads() == 3
    monkeypatch.setenv("LENSLAB_THREADS", "two")
    with pytest.raises(ValueError, match="LENSLAB_THREADS must be a positive integer"):
        compute_threads()
