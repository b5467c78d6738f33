"""Sharded prompt sets: slices, and shard-by-shard results equal to the one-job results."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.extract import extract
from lenslab.lenses.logit import LogitLens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.patching import parse_config, run_patching
from lenslab.patching.sweep import build_cases, patch_case
from lenslab.prompts import encode_set
from lenslab.shards import case_count, gather, prompt_slice, shard_bounds, shard_of
from lenslab.stats.aggregate import layer_means, target_means
from lenslab.stats.lens_stats import apply_lens, parse_lens_config

# Seven prompts of different lengths (so batches pad), three clean/corrupt pairs.
PROMPTS = [
    {"id": "a", "text": "w1 w2 w3 w4 w5 w6", "subject": "w3 w4", "answer": "w9",
     "targets": ["w9", "w10"]},
    {"id": "b", "text": "w1 w2 w7 w8 w5 w6", "subject": "w7 w8", "answer": "w10",
     "targets": ["w9", "w10"]},
    {"id": "c", "text": "w1 w2 w7 w5", "subject": "w7", "answer": "w10"},
    {"id": "d", "text": "w11 w12 w13 w14 w15 w16 w17 w18", "subject": "w13", "answer": "w20"},
    {"id": "e", "text": "w11 w12 w19 w14 w15 w16 w17 w18", "subject": "w19", "answer": "w21"},
    {"id": "f", "text": "w30 w31 w32", "subject": "w31", "answer": "w33"},
    {"id": "g", "text": "w30 w34 w32", "subject": "w34", "answer": "w35"},
]  # fmt: skip
PROMPT_SET = {
    "name": "toy",
    "prompts": PROMPTS,
    "pairs": [{"clean": "a", "corrupt": "b"}, {"clean": "d", "corrupt": "e"},
              {"clean": "f", "corrupt": "g"}],
}  # fmt: skip


@pytest.fixture(scope="module")
def gpt2() -> ModelAdapter:
    torch.set_num_threads(1)
    return ModelAdapter(build_tiny("gpt2"), tiny_tokenizer(), name="tiny-gpt2")


@pytest.mark.parametrize(
    ("n", "shards", "align", "expected"),
    [
        (10, 3, 1, [(0, 4), (4, 8), (8, 10)]),
        (10, 3, 4, [(0, 4), (4, 8), (8, 10)]),
        (14, 2, 8, [(0, 8), (8, 14)]),
        (10, 4, 8, [(0, 8), (8, 10)]),  # rounding to the batch leaves two shards, not four
        (3, 5, 1, [(0, 1), (1, 2), (2, 3)]),  # never an empty shard
        (5, 1, 8, [(0, 5)]),
        (10_000, 100, 8, [(k * 104, min(10_000, (k + 1) * 104)) for k in range(97)]),
    ],
)
def test_shard_bounds_cover_in_order(n, shards, align, expected) -> None:
    bounds = shard_bounds(n, shards, align)
    assert bounds == expected
    assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))
    assert all(hi > lo for lo, hi in bounds) and len(bounds) <= shards
    assert all((hi - lo) % align == 0 for lo, hi in bounds[:-1])


def test_bad_shard_counts_are_clear_errors() -> None:
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(LensLabError, match="positive integer"):
            shard_bounds(10, bad)
    with pytest.raises(LensLabError, match="does not exist"):
        shard_of([(0, 4), (4, 8)], 2)
    with pytest.raises(LensLabError, match="columns"):
        gather([pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [1]})])


def test_prompt_slice_keeps_its_pairs_and_name() -> None:
    part = prompt_slice({**PROMPT_SET, "shards": 3}, 3, 7)
    assert [p["id"] for p in part["prompts"]] == ["d", "e", "f", "g"]
    assert part["pairs"] == PROMPT_SET["pairs"][1:]
    assert part["name"] == "toy" and part["shards"] == 1
    assert len(PROMPT_SET["prompts"]) == 7  # the original is not touched
    assert case_count(PROMPT_SET, "pairs") == 3 and case_count(PROMPT_SET, "noise") == 7


def _sharded_lens(adapter, prompts, cfg, bounds):
    tables, tracks = [], []
    for lo, hi in bounds:
        part = prompt_slice(PROMPT_SET, lo, hi)
        encoded = encode_set(adapter.tokenizer, part)
        acts = extract(adapter, encoded, batch_size=2, progress=False)
        table, tracked = apply_lens(LogitLens(adapter), acts, encoded, cfg)
        tables.append(table)
        tracks.append(tracked)
    offsets = [lo for lo, _ in bounds]
    return gather(tables, offsets), gather(tracks, offsets)


def test_sharded_extraction_and_lens_equal_one_job(gpt2: ModelAdapter) -> None:
    cfg = parse_lens_config({})
    encoded = encode_set(gpt2.tokenizer, PROMPT_SET)
    acts = extract(gpt2, encoded, batch_size=2, progress=False)
    table, tracked = apply_lens(LogitLens(gpt2), acts, encoded, cfg)
    bounds = shard_bounds(len(PROMPTS), 3, align=2)
    assert bounds == [(0, 4), (4, 7)]
    # extraction: each shard's states are exactly the one-job states of its prompts
    for lo, hi in bounds:
        part = encode_set(gpt2.tokenizer, prompt_slice(PROMPT_SET, lo, hi))
        shard = extract(gpt2, part, batch_size=2, progress=False)
        for k, states in enumerate(shard.resid):
            assert torch.equal(states, acts.resid[lo + k])
    got_table, got_tracked = _sharded_lens(gpt2, encoded, cfg, bounds)
    pd.testing.assert_frame_equal(got_table, table, check_exact=True)
    pd.testing.assert_frame_equal(got_tracked, tracked, check_exact=True)
    assert not tracked.empty and got_table.prompt_index.max() == len(PROMPTS) - 1
    for agg in (layer_means, target_means):
        pd.testing.assert_frame_equal(
            agg(got_table if agg is layer_means else got_tracked),
            agg(table if agg is layer_means else tracked),
            check_exact=True,
        )
    # the bootstrap draws from all rows at once, so it too is unchanged
    pd.testing.assert_frame_equal(
        layer_means(got_table, ci="bootstrap", n_boot=200), layer_means(table, ci="bootstrap",
                                                                        n_boot=200)
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["pairs", "noise"])
def test_sharded_patching_equals_one_job(gpt2: ModelAdapter, mode: str) -> None:
    cfg = parse_config({"mode": mode, "kinds": ["resid", "mlp"], "window": 2, "noise_samples": 2})
    whole = run_patching(gpt2, PROMPT_SET, cfg, progress=False)
    cases = build_cases(gpt2, PROMPT_SET, cfg)
    bounds = shard_bounds(case_count(PROMPT_SET, mode), 2)
    assert len(cases) == bounds[-1][1] and len(bounds) == 2
    parts = [
        pd.concat([patch_case(gpt2, c, cfg) for c in cases[lo:hi]], ignore_index=True)
        for lo, hi in bounds
    ]
    pd.testing.assert_frame_equal(gather(parts), whole, check_exact=True)
