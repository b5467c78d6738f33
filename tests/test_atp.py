"""Head-level exact patching and attribution patching (F13c): against hooked full forwards,
hand-derived identities and exact patching on the same prompts."""

from __future__ import annotations

import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.patching import Patch, Patcher
from lenslab.patching.reference import clean_head_inputs, naive_head_patch

CLEAN = [5, 6, 7, 8, 9, 10, 11]
CORRUPT = [5, 6, 17, 18, 9, 10, 11]  # differs at positions 2, 3
# Several layouts: GPT-2 (Conv1D c_proj), Llama and Mistral (grouped-query attention, o_proj),
# NeoX (dense), OPT (out_proj), Falcon (dense, multi-query off), Bloom (the map names dense).
HEAD_ARCHS = ["gpt2", "llama", "mistral", "gpt_neox", "opt", "falcon", "bloom"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _adapter(arch: str) -> ModelAdapter:
    return ModelAdapter(build_tiny(arch), tiny_tokenizer(), name=arch)


@pytest.mark.parametrize("arch", HEAD_ARCHS)
def test_head_patch_equals_hooked_full_forward(arch: str) -> None:
    ad = _adapter(arch)
    patcher = Patcher(ad, CLEAN, CORRUPT, batch_size=16)
    clean_z = clean_head_inputs(ad, torch.tensor(CLEAN))
    n_heads = ad.n_heads()
    cells = [
        (layer, t, h)
        for layer in range(ad.n_layers)
        for h in range(n_heads)
        for t in range(len(CLEAN))
    ]
    got = patcher.run([Patch("head", (lay,), (t,), (h,)) for lay, t, h in cells], [0] * len(cells))
    want = torch.stack(
        [naive_head_patch(ad, clean_z, torch.tensor(CORRUPT), lay, t, h) for lay, t, h in cells]
    )
    assert torch.allclose(got, want, rtol=0, atol=1e-5)
    # The patches do something: restoring a head after the corrupted tokens moves the logits.
    base = patcher.corrupt[0].logits
    moved = (want - base).abs().amax(-1)
    assert float(moved.max()) > 1e-4  # Bloom's random tiny model moves least (8e-4)
    # Before the first corrupted position the head's clean and corrupt outputs are equal.
    early = torch.tensor([t < 2 for _, t, _ in cells])
    assert float(moved[early].max()) < 1e-5


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_all_heads_of_a_position_equal_the_attention_patch(arch: str) -> None:
    ad = _adapter(arch)
    patcher = Patcher(ad, CLEAN, CORRUPT)
    heads = tuple(range(ad.n_heads()))
    patches = [Patch("head", (1,), (3,), heads), Patch("attn", (1,), (3,))]
    out = patcher.run(patches, [0, 0])
    assert torch.allclose(out[0], out[1], atol=1e-5)
    assert float((out[0] - patcher.corrupt[0].logits).abs().max()) > 1e-4


def test_head_patches_are_checked() -> None:
    ad = _adapter("gpt2")
    patcher = Patcher(ad, CLEAN, CORRUPT)
    with pytest.raises(LensLabError, match="heads"):
        patcher.run([Patch("head", (0,), (3,), (4,))], [0])  # 4 heads: 0..3
    with pytest.raises(LensLabError, match="heads"):
        patcher.run([Patch("head", (0,), (3,))], [0])
    with pytest.raises(LensLabError, match="kind 'head'"):
        patcher.run([Patch("attn", (0,), (3,), (1,))], [0])


def test_head_patch_refused_on_a_non_attention_mixer() -> None:
    ad = _adapter("lfm2")  # blocks 0 and 2 run a short conv
    patcher = Patcher(ad, CLEAN, CORRUPT)
    assert sorted(patcher.head_splits) == [1]
    with pytest.raises(LensLabError, match="conv"):
        patcher.run([Patch("head", (0,), (3,), (0,))], [0])
