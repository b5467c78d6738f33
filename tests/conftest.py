"""Shared fixtures. Nothing here downloads: tiny models come from configs in code, and the
embedded model is trained once per test session from conf/model/embedded-test.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import TINY_CONFIGS, build_tiny, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
ARCHS = sorted(TINY_CONFIGS)

# One thread: the test tensors are tiny, and extra threads only spin-wait on a shared machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def embedded_test_dir(tmp_path_factory) -> Path:
    """The small embedded model, trained once per session (about a minute on 2 cores)."""
    from lenslab.embedded.train import train_embedded_model

    settings = OmegaConf.to_container(
        OmegaConf.load(REPO / "conf/model/embedded-test.yaml").embedded, resolve=True
    )
    out = tmp_path_factory.mktemp("embedded") / "embedded-test"
    train_embedded_model(settings, out, progress=False)
    return out


@pytest.fixture(params=ARCHS)
def tiny_adapter(request) -> ModelAdapter:
    """A random tiny model of each architecture behind the adapter."""
    return ModelAdapter(build_tiny(request.param), tiny_tokenizer(), name=request.param)


@pytest.fixture
def gpt2_adapter() -> ModelAdapter:
    return ModelAdapter(build_tiny("gpt2"), tiny_tokenizer(), name="tiny-gpt2")
