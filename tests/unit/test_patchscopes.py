"""Patchscopes: the intervention on tiny models of every architecture (exact checks), and the
token-identity / entity-resolution findings on the trained embedded model (with margins)."""

from __future__ import annotations

import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.lenses.logit import LogitLens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.patchscopes import (
    SourcePrompt,
    fit_affine,
    fit_cross_model,
    patched_generate,
    patched_logits,
    precision_by_layer,
    source_run,
    split_fit,
    token_identity,
)
from lenslab.patchscopes.core import _prefix_cache

IDS = [5, 9, 12, 7, 30, 18, 44, 11]
TARGET = [6, 20, 6, 8, 21, 8, 40]


def test_identity_patch_reproduces_unpatched_run(tiny_adapter: ModelAdapter) -> None:
    """S = T, i = i*, l = l*, M = M*: writing a state over itself changes nothing, bit for bit."""
    _, resid = source_run(tiny_adapter, IDS)
    n = tiny_adapter.n_layers
    # Every architecture shares the prefix's cache (no silent fallback to full forwards).
    assert _prefix_cache(tiny_adapter, torch.tensor([IDS]), 2) is not None
    # The unpatched run through the same call (only the last position unembedded).
    with torch.no_grad():
        logits = tiny_adapter.model(input_ids=torch.tensor([IDS]), logits_to_keep=1).logits[0]
    for pos in (2, len(IDS) - 1):
        for layer in range(n + 1):
            out = patched_logits(
                tiny_adapter, IDS, pos, [layer], resid[layer, pos][None], reuse_prefix=False
            )
            assert torch.equal(out[0], logits[-1].float()), (layer, pos)
            # Sharing the unpatched prefix's key/value cache: equal to float tolerance.
            cached = patched_logits(tiny_adapter, IDS, pos, [layer], resid[layer, pos][None])
            torch.testing.assert_close(cached[0], logits[-1].float(), atol=1e-5, rtol=1e-5)


def test_patch_changes_the_run(tiny_adapter: ModelAdapter) -> None:
    """A different state written at layer l* changes the output (the hook really writes)."""
    _, resid = source_run(tiny_adapter, IDS)
    base, _ = source_run(tiny_adapter, TARGET)
    for layer in (0, tiny_adapter.n_layers // 2, tiny_adapter.n_layers):
        out = patched_logits(tiny_adapter, TARGET, -1, [layer], resid[layer, 3][None])
        assert not torch.allclose(out[0], base[-1].float(), atol=1e-4)


def test_last_layer_patch_is_the_decoded_state(tiny_adapter: ModelAdapter) -> None:
    """Patching resid[L] at the read position: the output is decode(h), i.e. the token-identity
    patchscope at the last layer is the source model's own next-token prediction."""
    logits, resid = source_run(tiny_adapter, IDS)
    n = tiny_adapter.n_layers
    out = patched_logits(tiny_adapter, TARGET, -1, [n] * len(IDS), resid[n])
    torch.testing.assert_close(out, logits.float(), atol=1e-5, rtol=1e-5)
    assert torch.equal(out.argmax(-1), logits.argmax(-1))


def test_batched_equals_one_at_a_time(tiny_adapter: ModelAdapter) -> None:
    _, resid = source_run(tiny_adapter, IDS)
    n = tiny_adapter.n_layers
    layers = [layer for layer in range(n + 1) for _ in range(3)]
    vecs = torch.stack([resid[layer, p] for layer in range(n + 1) for p in (1, 4, 7)])
    batched = patched_logits(tiny_adapter, TARGET, 3, layers, vecs, batch_size=5)
    single = torch.cat(
        [
            patched_logits(tiny_adapter, TARGET, 3, [la], v[None], reuse_prefix=False)
            for la, v in zip(layers, vecs, strict=True)
        ]
    )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_generation_is_deterministic_and_batched_like_single(gpt2_adapter) -> None:
    _, resid = source_run(gpt2_adapter, IDS)
    layers = [0, 1, 2, 3]
    vecs = resid[layers, -1]
    a = patched_generate(gpt2_adapter, TARGET, -1, layers, vecs, max_new_tokens=5)
    b = patched_generate(gpt2_adapter, TARGET, -1, layers, vecs, max_new_tokens=5, batch_size=1)
    assert a == b and all(len(g) == 5 for g in a)
    # The first generated token is the patched run's own argmax.
    first = patched_logits(gpt2_adapter, TARGET, -1, layers, vecs).argmax(-1).tolist()
    assert [g[0] for g in a] == first


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama", "opt", "gemma3", "lfm2", "jamba"])
def test_cached_generation_equals_rerunning_the_patched_sequence(arch) -> None:
    """Generation reuses the patched prompt's keys and values; rerunning the whole patched
    sequence for every new token (the reference) must give the same tokens."""
    adapter = ModelAdapter(build_tiny(arch, seed=1), tiny_tokenizer(), name=arch)
    layers = list(range(adapter.n_layers + 1))
    # Large random states, so that each row's patch steers its generation somewhere else.
    gen = torch.Generator().manual_seed(0)
    vecs = 30 * torch.randn(len(layers), adapter.d_model, generator=gen)
    runs = {}
    for position in (-1, 2):
        cached = patched_generate(adapter, TARGET, position, layers, vecs, max_new_tokens=6)
        rerun = patched_generate(
            adapter, TARGET, position, layers, vecs, max_new_tokens=6, use_cache=False
        )
        assert cached == rerun, (arch, position)
        runs[position] = cached
    # The patches matter: at the last position, different rows generate different tokens.
    assert len({tuple(g) for g in runs[-1]}) > 1, runs


def test_generation_without_a_cache_falls_back_to_rerunning(gpt2_adapter, monkeypatch) -> None:
    from lenslab.patchscopes import core

    vecs = 30 * torch.randn(4, gpt2_adapter.d_model, generator=torch.Generator().manual_seed(0))
    want = patched_generate(gpt2_adapter, TARGET, -1, [0, 1, 2, 3], vecs, max_new_tokens=5)
    monkeypatch.setattr(core, "output_cache", lambda out: None)  # a model that returns no cache
    got = patched_generate(gpt2_adapter, TARGET, -1, [0, 1, 2, 3], vecs, max_new_tokens=5)
    assert got == want and all(len(g) == 5 for g in got)


def test_token_identity_table_and_lens_baseline(gpt2_adapter) -> None:
    """At l = l* = L the patchscope and the logit lens both give precision 1 by definition."""
    prompts = [SourcePrompt("a", IDS), SourcePrompt("b", TARGET[:5])]
    table = token_identity(gpt2_adapter, prompts, TARGET, lenses={"logit": LogitLens(gpt2_adapter)})
    n = gpt2_adapter.n_layers
    assert len(table) == 2 * (len(IDS) + 5) * (n + 1)
    prec = precision_by_layer(table).set_index(["method", "layer"])["precision"]
    assert prec[("patchscope", n)] == 1.0 and prec[("logit", n)] == 1.0
    assert (table["surprisal"] >= 0).all()


def test_cross_model_affine_map_recovers_a_known_map() -> None:
    """States of model B built as an exact affine image of model A's are fitted exactly, and the
    held-out fit says so; a map between unrelated states fits poorly on held-out rows."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    a, b = (
        torch.randn(5, 8, generator=gen, dtype=torch.float64),
        torch.randn(5, generator=gen, dtype=torch.float64),
    )
    fmap = fit_affine(x, x @ a.T + b)
    torch.testing.assert_close(fmap.weight, a)
    torch.testing.assert_close(fmap.bias, b)
    _, _, held = split_fit(x, x @ a.T + b)
    assert held > 0.999999
    _, _, held_noise = split_fit(x, torch.randn(200, 5, generator=gen, dtype=torch.float64))
    assert held_noise < 0.2
    with pytest.raises(LensLabError, match="cannot determine"):
        fit_affine(x[:5], x[:5])


def test_cross_model_patchscope_between_two_seeds() -> None:
    """Two tiny GPT-2 seeds of different widths: the map fitted on paired states runs through
    the target model, and at the last layer precision@1 is far above the 1/V chance level."""
    src = ModelAdapter(build_tiny("gpt2", seed=0), tiny_tokenizer(), name="a")
    tgt = ModelAdapter(build_tiny("gpt2", seed=1, n_embd=48), tiny_tokenizer(), name="b")
    gen = torch.Generator().manual_seed(0)
    texts = torch.randint(4, 84, (30, 12), generator=gen).tolist()
    n = src.n_layers
    maps = fit_cross_model(src, tgt, texts, [(n, n), (1, 1)])
    fmap, train_r2, held = maps[(n, n)]
    assert fmap.weight.shape == (48, 32) and 0.0 < held <= train_r2 <= 1.0
    # Model a's states mapped into itself: the fit is exact.
    _, _, self_held = fit_cross_model(src, src, texts, [(2, 2)])[(2, 2)]
    assert self_held > 0.999
    table = token_identity(
        src, [SourcePrompt("p", IDS)], TARGET, target=tgt, pairs=[(n, n)], mapping=fmap
    )
    assert len(table) == len(IDS)


def test_bad_inputs_are_clear_errors(gpt2_adapter) -> None:
    _, resid = source_run(gpt2_adapter, IDS)
    with pytest.raises(LensLabError, match="outside the prompt"):
        patched_logits(gpt2_adapter, TARGET, 40, [1], resid[1, :1])
    with pytest.raises(LensLabError, match="out of range"):
        patched_logits(gpt2_adapter, TARGET, -1, [9], resid[1, :1])
    with pytest.raises(LensLabError, match="width"):
        patched_logits(gpt2_adapter, TARGET, -1, [1], torch.zeros(1, 7))


def test_cross_layer_pairs_on_a_coarser_grid() -> None:
    """l* = l at every state; the cross pairs on every step-th state plus the last."""
    from lenslab.patchscopes.experiments import layer_pairs

    assert layer_pairs(3) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert len(layer_pairs(3, cross=True)) == 16
    pairs = layer_pairs(5, cross=True, cross_step=2)
    grid = [0, 2, 4, 5]
    assert set(pairs) == {(a, a) for a in range(6)} | {(a, b) for a in grid for b in grid}
    assert len(pairs) == 6 + 4 * 3


def test_cross_layer_grid_keeps_only_the_patched_grid(gpt2_adapter) -> None:
    from lenslab.figures.patchscopes import cross_layer_grid, plot_token_identity
    from lenslab.patchscopes.experiments import layer_pairs

    n = gpt2_adapter.n_layers
    pairs = layer_pairs(n, cross=True, cross_step=2)
    table = token_identity(gpt2_adapter, [SourcePrompt("a", IDS)], TARGET, pairs=pairs)
    grid = cross_layer_grid(table)
    states = sorted({*range(0, n + 1, 2), n})
    assert grid.index.tolist() == states and grid.columns.tolist() == states
    assert not grid.isna().any().any()
    _, caption = plot_token_identity(table, "tiny", "t")
    assert "cross-layer patching, states" in caption
