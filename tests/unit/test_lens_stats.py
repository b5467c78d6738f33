"""Lens statistics against brute force: full logits, sorted ranks, torch's KL, unstreamed runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.extract import extract
from lenslab.lenses.catalog import LENS_NAMES
from lenslab.lenses.logit import LogitLens
from lenslab.lenses.registry import build_lens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.prompts import encode_prompt, encode_set
from lenslab.stats.aggregate import compare_lenses, layer_means, mean_ci
from lenslab.stats.lens_stats import (
    LensConfig,
    apply_lens,
    parse_lens_config,
    prompt_stats,
    stats_frames,
)

TEXT = "w1 w5 w9 w2 w5 w7 w3 w1 w5 w11 w4"


def _adapter(arch: str = "gpt2", **overrides) -> ModelAdapter:
    return ModelAdapter(build_tiny(arch, **overrides), tiny_tokenizer(), name=f"tiny-{arch}")


def _run(
    adapter: ModelAdapter, text: str = TEXT
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.tensor(tiny_tokenizer()(text)["input_ids"])
    logits, resid = adapter.run_with_resid(ids[None])
    return ids, logits[0], resid[:, 0]


def _brute(adapter, resid, ids, lens, track=(), clip=False):
    """Every statistic from full float64 logits of all layers at once, by definition."""
    n = adapter.n_layers
    with torch.no_grad():
        x = torch.stack([lens.logits(resid[layer], layer) for layer in range(n + 1)]).double()
        final = adapter.decode(resid[n]).double()
    logp = torch.log_softmax(x, -1)
    logf = torch.log_softmax(final, -1)
    v = x.shape[-1]
    c = 1.0 / (10 * v)

    def kl(lp, lq):  # KL(p || q) from log-probabilities, optionally clipped as the original
        p, q = lp.exp(), lq.exp()
        if clip:
            p, q = p.clamp_min(c), q.clamp_min(c)
        return (p * (p.log() - q.log())).sum(-1)

    def rank(tok):  # position of tok in a descending sort, 1-based
        order = torch.argsort(x, dim=-1, descending=True, stable=True)
        return (order == tok[..., None]).float().argmax(-1) + 1

    top1 = final.argmax(-1)
    t = ids.shape[0]
    nxt = torch.cat([ids[1:], ids[-1:]])
    p, pf = logp.exp(), logf.exp()
    m = (p + pf) / 2
    js = 0.5 * kl(logp, m.log()) + 0.5 * kl(logf.expand_as(logp), m.log()) if not clip else None
    xc = x - x.mean(-1, keepdim=True)
    fc = final - final.mean(-1, keepdim=True)
    return {
        "kl_final": kl(logf.expand_as(logp), logp),
        "kl_input": kl(logp[0].expand_as(logp), logp),
        "rev_kl_final": kl(logp, logf.expand_as(logp)),
        "js_final": js,
        "entropy": -(p * logp).sum(-1),
        "mse_logits": (xc - fc).square().mean(-1),
        "rank_final_top1": rank(top1.expand(n + 1, t)),
        "rank_next": rank(nxt.expand(n + 1, t)),
        "rank_input": rank(ids.expand(n + 1, t)),
        "track": [rank(torch.full((n + 1, t), i)) for i in track],
        "xent_next": -logp.gather(-1, nxt.expand(n + 1, t)[..., None])[..., 0],
        "top": torch.sort(x, -1, descending=True),
        "cos_final": torch.nn.functional.cosine_similarity(resid.double(), resid[n].double(), -1),
        "top1": top1,
    }


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox", "opt", "gemma"])
def test_last_layer_is_the_model_output(arch):
    adapter = _adapter(arch)
    ids, logits, resid = _run(adapter)
    st = prompt_stats(LogitLens(adapter), resid, ids).arrays
    last = adapter.n_layers
    for key in ("kl_final", "rev_kl_final", "js_final", "mse_logits"):
        assert np.abs(st[key][last]).max() < 1e-6, key
    assert (st["rank_final_top1"][last] == 1).all()
    assert (st["top_ids"][last, :, 0] == logits.argmax(-1).numpy()).all()
    # layer 0 is the input distribution: KL(input||input) = 0, and earlier layers are not final
    assert np.abs(st["kl_input"][0]).max() < 1e-6
    assert st["kl_final"][0].max() > 1e-5


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("clip", [False, True])
def test_statistics_match_brute_force(arch, clip):
    adapter = _adapter(arch)
    ids, _, resid = _run(adapter)
    lens = LogitLens(adapter)
    track = [7, 40]
    cfg = LensConfig(topk=4, clip_probs=clip, chunk_layers=2, chunk_positions=4)
    st = prompt_stats(lens, resid, ids, cfg, track).arrays
    ref = _brute(adapter, resid, ids, lens, track, clip)
    for key in ("kl_final", "kl_input", "rev_kl_final", "entropy", "mse_logits", "cos_final"):
        np.testing.assert_allclose(st[key], ref[key].numpy(), atol=2e-5, rtol=1e-4, err_msg=key)
    if not clip:
        np.testing.assert_allclose(st["js_final"], ref["js_final"].numpy(), atol=2e-5)
        assert st["js_final"].max() <= math.log(2) + 1e-6
    for key in ("rank_final_top1", "rank_input"):
        np.testing.assert_array_equal(st[key], ref[key].numpy(), err_msg=key)
    np.testing.assert_array_equal(st["rank_next"][:, :-1], ref["rank_next"][:, :-1].numpy())
    assert np.isnan(st["rank_next"][:, -1]).all()
    for j in range(len(track)):
        np.testing.assert_array_equal(st["track_rank"][..., j], ref["track"][j].numpy())
    values, order = ref["top"]
    np.testing.assert_array_equal(st["top_ids"], order[..., :4].numpy())
    np.testing.assert_allclose(st["top_logits"], values[..., :4].numpy(), atol=1e-5)
    # ranks are not trivially 1: the comparison counts see the whole vocabulary
    assert np.nanmax(st["rank_next"]) > 5 and st["track_rank"].max() > 5


def test_kl_matches_torch_kl_div():
    adapter = _adapter("mistral")
    ids, _, resid = _run(adapter)
    st = prompt_stats(LogitLens(adapter), resid, ids).arrays
    with torch.no_grad():
        logq = torch.log_softmax(torch.stack([adapter.decode(r) for r in resid]).double(), -1)
    logf = logq[-1].expand_as(logq)
    direct = torch.nn.functional.kl_div(logq, logf, log_target=True, reduction="none").sum(-1)
    np.testing.assert_allclose(st["kl_final"], direct.numpy(), atol=2e-5, rtol=1e-4)


def test_streamed_equals_unstreamed():
    adapter = _adapter("gpt2", n_layer=5)
    ids, _, resid = _run(adapter, " ".join(f"w{i % 37}" for i in range(29)))
    lens = LogitLens(adapter, affine=False)
    big = prompt_stats(lens, resid, ids, LensConfig(chunk_layers=99, chunk_positions=999), [9])
    small = prompt_stats(lens, resid, ids, LensConfig(chunk_layers=1, chunk_positions=4), [9])
    for key, value in big.arrays.items():
        np.testing.assert_allclose(small.arrays[key], value, atol=1e-5, rtol=1e-5, err_msg=key)
    np.testing.assert_array_equal(small.arrays["top_ids"], big.arrays["top_ids"])


def test_final_logits_argument_and_layer_subset():
    adapter = _adapter("llama")
    ids, logits, resid = _run(adapter)
    lens = LogitLens(adapter)
    full = prompt_stats(lens, resid, ids)
    sub = prompt_stats(lens, resid, ids, LensConfig(layers=[3, 1, -1]), final_logits=logits)
    assert sub.layers == [1, 3]
    np.testing.assert_allclose(sub.arrays["kl_final"], full.arrays["kl_final"][[1, 3]], atol=1e-5)
    np.testing.assert_allclose(sub.arrays["kl_input"], full.arrays["kl_input"][[1, 3]], atol=1e-5)


def test_noaffine_lens_is_compared_with_the_model_output():
    adapter = _adapter("gpt2")
    ids, _, resid = _run(adapter)
    lens = build_lens("logit_noaffine", adapter)
    plain = prompt_stats(lens, resid, ids).arrays
    ref = _brute(adapter, resid, ids, lens)
    np.testing.assert_allclose(plain["kl_final"], ref["kl_final"].numpy(), atol=2e-5, rtol=1e-4)
    # final is the model's own (affine) output, so even the last layer differs without affine
    assert plain["kl_final"][-1].min() > 1e-6


def _prompt_set():
    return {
        "name": "dev",
        "prompts": [
            {"id": "a", "text": "w1 w2 w3 w4 w2", "answer": "w3", "targets": ["w9"]},
            {"id": "b", "text": "w5 w6 w7", "targets": ["w1", "w2"]},
        ],
    }


def test_apply_lens_tables():
    adapter = _adapter("gpt2")
    tok = adapter.tokenizer
    prompts = encode_set(tok, _prompt_set())
    acts = extract(adapter, prompts, batch_size=2, progress=False)
    df, tracked = apply_lens(LogitLens(adapter), acts, prompts, LensConfig(topk=3))
    n = adapter.n_layers + 1
    assert len(df) == n * (5 + 3)
    assert list(df.groupby("prompt_id").size()) == [5 * n, 3 * n]
    assert df.loc[df.position == 0, "token"].tolist()[:1] == ["w1"]
    # next-token columns: defined except at each prompt's last position
    last = df.groupby("prompt_id").position.transform("max") == df.position
    assert df.loc[last, "xent_next"].isna().all() and df.loc[~last, "xent_next"].notna().all()
    np.testing.assert_allclose(np.exp(-df.loc[~last, "xent_next"]), df.loc[~last, "prob_next"])
    # tracked table: answer + target for a, two targets for b, every (layer, position)
    roles = tracked.groupby(["prompt_id", "target"]).role.first().to_dict()
    assert roles == {("a", "w3"): "answer", ("a", "w9"): "target", ("b", "w1"): "target",
                     ("b", "w2"): "target"}  # fmt: skip
    assert len(tracked) == 2 * 5 * n + 2 * 3 * n
    # the rank of the answer at its own input position equals the input-token rank there
    a3 = tracked[(tracked.target == "w3") & (tracked.position == 2)].sort_values("layer")
    own = df[(df.prompt_id == "a") & (df.position == 2)].sort_values("layer")
    np.testing.assert_array_equal(a3["rank"].to_numpy(), own["rank_input"].to_numpy())
    # top-1 probability agrees with the entropy bound: p_top1 >= exp(-H)
    assert (df.top1_prob >= np.exp(-df.entropy) - 1e-9).all()
    assert (df.top1_prob >= df.top2_prob).all()


def test_bad_input_is_a_lenslab_error():
    adapter = _adapter("gpt2")
    ids, _, resid = _run(adapter)
    lens = LogitLens(adapter)
    with pytest.raises(LensLabError, match="out of range"):
        prompt_stats(lens, resid, ids, LensConfig(layers=[0, 99]))
    with pytest.raises(LensLabError, match="logit_noaffine"):
        build_lens("tunned", adapter)
    assert set(LENS_NAMES) == {"logit", "logit_noaffine", "tuned", "jacobian"}
    with pytest.raises(LensLabError, match="params.pt"):
        build_lens("tuned", adapter)
    target = {"id": "x", "text": "w1 w2", "targets": ["w3 w4"]}
    with pytest.raises(LensLabError, match="2 tokens"):
        encode_prompt(adapter.tokenizer, target, multi_token="error")
    # By default a word of several tokens is tracked by its first token (and recorded).
    encoded = encode_prompt(adapter.tokenizer, target)
    pieces = adapter.tokenizer(" w3 w4", add_special_tokens=False)["input_ids"]
    assert len(pieces) == 2 and encoded.target_ids == {"w3 w4": pieces[0]}
    assert "w3 w4" in encoded.multi_token
    with pytest.raises(LensLabError, match="re-extract"):
        prompt_stats(lens, resid[:-1], ids)
    with pytest.raises(LensLabError, match="outside the vocabulary"):
        prompt_stats(lens, resid, ids, track_ids=[10_000])
    with pytest.raises(LensLabError, match="chunk_layers"):
        parse_lens_config({"chunk_layers": 0})
    with pytest.raises(LensLabError, match="unknown lens setting"):
        parse_lens_config({"top_k": 5})


def test_stats_frames_without_tokenizer():
    adapter = _adapter("gpt2")
    ids, _, resid = _run(adapter, "w1 w2 w3")
    st = prompt_stats(LogitLens(adapter), resid, ids, LensConfig(topk=2))
    df, tr = stats_frames(st, ids, "p", 0, "logit")
    assert df.token.tolist()[:3] == [str(i) for i in ids.tolist()]
    assert tr.empty and "rank" in tr.columns


# -- aggregates --------------------------------------------------------------------------------
def test_mean_ci_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mean, lo, hi = mean_ci(x, "normal")
    half = 1.959963984540054 * x.std(ddof=1) / 2
    assert mean == 2.5 and lo == pytest.approx(2.5 - half) and hi == pytest.approx(2.5 + half)
    b1 = mean_ci(x, "bootstrap", n_boot=500, seed=3)
    assert b1 == mean_ci(x, "bootstrap", n_boot=500, seed=3)
    assert 1.0 <= b1[1] < 2.5 < b1[2] <= 4.0
    assert mean_ci(np.array([5.0]), "normal") == (5.0, 5.0, 5.0)
    rate = mean_ci(np.array([0.0, 0.0, 0.0, 1.0]), "normal", bounds=(0.0, 1.0))
    assert rate[0] == 0.25 and rate[1] == 0.0 and rate[2] < 1.0  # the interval stays in [0, 1]


def _toy_table(lens: str, shift: float) -> pd.DataFrame:
    rows = []
    for pid in ("a", "b"):
        for layer in range(3):
            for pos in range(4):
                last = pos == 3
                rows.append(
                    dict(prompt_id=pid, prompt_index=0, lens=lens, layer=layer, position=pos,
                         kl_final=layer + pos + shift, rank_final_top1=10.0 ** layer,
                         xent_next=np.nan if last else 1.0, agree_top1=layer == 2)
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_layer_means_and_lens_comparison():
    a, b = _toy_table("logit", 0.0), _toy_table("tuned", -0.5)
    means = layer_means(pd.concat([a, b]), ci="normal")
    kl = means[(means.metric == "kl_final") & (means.lens == "logit")].set_index("layer")
    assert kl.loc[1, "mean"] == pytest.approx(2.5) and kl.loc[1, "n"] == 8
    lr = means[(means.metric == "log10_rank_final_top1") & (means.lens == "logit")]
    assert lr.set_index("layer")["mean"].to_dict() == pytest.approx({0: 0.0, 1: 1.0, 2: 2.0})
    xe = means[(means.metric == "xent_next")]
    assert (xe.n == 6).all()  # the last position has no next token
    assert means[(means.metric == "agree_top1")].set_index(["lens", "layer"])["mean"][
        ("logit", 2)
    ] == pytest.approx(1.0)
    cmp = compare_lenses(pd.concat([a, b]), ci="normal")
    d = cmp[(cmp.metric == "kl_final")]
    assert set(zip(d.lens_a, d.lens_b, strict=True)) == {("logit", "tuned")}
    np.testing.assert_allclose(d["mean_diff"], 0.5)
    assert compare_lenses(a).empty


def test_tuned_lens_drops_in(tmp_path):
    from lenslab.lenses.tuned import TunedLens

    adapter = _adapter("llama")
    ids, _, resid = _run(adapter)
    TunedLens(adapter).save(tmp_path)  # untrained: the identity, i.e. the logit lens
    tuned = build_lens("tuned", adapter, tmp_path)
    logit = prompt_stats(LogitLens(adapter), resid, ids).arrays
    same = prompt_stats(tuned, resid, ids).arrays
    for key in ("kl_final", "kl_input", "rank_final_top1", "cos_final"):
        np.testing.assert_allclose(same[key], logit[key], atol=1e-5, err_msg=key)
    with torch.no_grad():  # a trained-looking lens: statistics still follow their definitions
        for translator in tuned.layer_translators:
            translator.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    moved = prompt_stats(tuned, resid, ids, LensConfig(chunk_layers=2)).arrays
    ref = _brute(adapter, resid, ids, tuned)
    for key in ("kl_final", "kl_input", "rev_kl_final", "js_final", "entropy"):
        np.testing.assert_allclose(moved[key], ref[key].numpy(), atol=2e-5, rtol=1e-4, err_msg=key)
    np.testing.assert_array_equal(moved["rank_final_top1"], ref["rank_final_top1"].numpy())
    assert np.abs(moved["kl_final"][:-1] - logit["kl_final"][:-1]).max() > 1e-4


@pytest.mark.slow
def test_compiled_reduction_equals_eager():
    """The torch.compile path (used for real vocabularies) against the eager one."""
    adapter = _adapter("gpt2", vocab_size=300)
    ids, _, resid = _run(adapter, "w1 w5 w9 w2 w5 w7 w3")
    lens = LogitLens(adapter)
    for clip in (False, True):
        eager = prompt_stats(lens, resid, ids, LensConfig(compile="off", clip_probs=clip), [5])
        fused = prompt_stats(lens, resid, ids, LensConfig(compile="on", clip_probs=clip), [5])
        for key, value in eager.arrays.items():
            np.testing.assert_allclose(fused.arrays[key], value, atol=2e-5, rtol=1e-4, err_msg=key)
