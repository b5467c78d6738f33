"""Head-level exact patching and attribution patching (F13c): against hooked full forwards,
hand-derived identities and exact patching on the same prompts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lenslab.errors import LensLabError
from lenslab.findings import atp_findings
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny, tiny_tokenizer
from lenslab.patching import Patch, Patcher, parse_config, run_patching
from lenslab.patching.atp import Run, estimate
from lenslab.patching.atp_check import misses, run_atp, spearman, summarise
from lenslab.patching.config import parse_atp_config
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


# -- the fidelity gate: residual completeness --------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3", "falcon", "lfm2"])
def test_residual_completeness_holds(arch: str) -> None:
    check = _adapter(arch).fidelity.checks["resid_complete"]
    assert check.ok and check.error < 1e-5


def test_residual_completeness_fails_on_gemma4_and_refuses_resid_patching() -> None:
    ad = _adapter("gemma4")  # KV sharing and per-layer inputs (lenslab.models.tiny)
    check = ad.fidelity.checks["resid_complete"]
    assert not check.ok and check.error > 1e-2
    assert "num_kv_shared_layers=2" in check.cause
    assert "hidden_size_per_layer_input=8" in check.cause
    assert not ad.available("patch_resid") and not ad.available("atp")
    assert ad.available("patch_head")
    with pytest.raises(LensLabError, match="resid_complete"):
        Patcher(ad, CLEAN, CORRUPT).run([Patch("resid", (1,), (3,))], [0])


@pytest.mark.parametrize("per_layer,holds", [(8, False), (0, True)])
def test_gemma4_per_layer_inputs_decide_completeness(per_layer: int, holds: bool) -> None:
    # Gemma 4 without KV sharing: per-layer inputs alone break the identity; without them it
    # holds. (KV sharing without per-layer inputs does not run in transformers 5.24.)
    model = build_tiny("gemma4", num_kv_shared_layers=0, hidden_size_per_layer_input=per_layer)
    check = ModelAdapter(model, tiny_tokenizer(), name="g4").fidelity.checks["resid_complete"]
    assert check.ok is holds
    assert (check.error < 1e-5) is holds


# -- attribution patching ----------------------------------------------------------------------
GOOD, BAD = 20, 30  # answer ids of the toy metric (logit difference at the last position)


def _run(clean=CLEAN, corrupt=CORRUPT, noise=None) -> Run:
    return Run(tuple(clean), tuple(corrupt), GOOD, BAD, noise)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_resid_atp_equals_an_independent_gradient(arch: str) -> None:
    """(clean - corrupt) . dLD/dresid from the adapter's autograd path (token embeddings as the
    leaf, states from record_resid), not from the delta leaves atp.py adds."""
    ad = _adapter(arch)
    [est] = estimate(ad, [_run()], graddrop=False)
    logits, states = ad.run_with_resid_graph(CORRUPT)
    ld = logits[0, -1, GOOD] - logits[0, -1, BAD]
    grads = torch.autograd.grad(ld, states[1:])
    with torch.no_grad():
        clean = ad.run_with_resid(torch.tensor([CLEAN]))[1][1:, 0]
    for layer, g in enumerate(grads):
        want = ((clean[layer] - states[layer + 1][0].detach()) * g[0]).sum(-1).double()
        assert torch.allclose(est.atp["resid"][layer], want, atol=1e-6, rtol=1e-5)
    assert float(est.atp["resid"][:, 2:].abs().max()) > 1e-3  # after the corrupted tokens
    assert float(est.atp["resid"][:, :2].abs().max()) == 0.0  # clean == corrupt before them


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_head_and_mlp_atp_track_exact_patching_on_a_near_linear_model(arch: str) -> None:
    """Random tiny models change little under a patch, so the first-order estimate must be
    close: heads within 10 % of the largest effect (measured 0.6-5.9 %), MLPs (whose patches
    move later attention
    more; measured 13 % on GPT-2; Falcon's and OPT's tiny MLPs are further off, 35 %) within
    20 %, both rank-correlated above 0.9."""
    ad = _adapter(arch)
    [est] = estimate(ad, [_run()], graddrop=False)
    patcher = Patcher(ad, CLEAN, CORRUPT)

    def ld(lg):
        return (lg[:, GOOD] - lg[:, BAD])[:, None].double()

    base = float(ld(patcher.corrupt[0].logits[None])[0, 0])
    L, H, T = ad.n_layers, ad.n_heads(), len(CLEAN)
    heads = [(j, h, t) for j in range(L) for h in range(H) for t in range(2, T)]
    mlps = [(j, t) for j in range(L) for t in range(2, T)]
    for kind, cells, est_of, tol in (
        ("head", heads, lambda c: est.atp["head"][c], 0.1),
        ("mlp", mlps, lambda c: est.atp["mlp"][c], 0.2),
    ):
        patches = [Patch(kind, (c[0],), (c[-1],), (c[1],) if kind == "head" else ()) for c in cells]
        exact = patcher.run(patches, [0] * len(cells), reduce=ld)[:, 0] - base
        approx = torch.tensor([float(est_of(c)) for c in cells], dtype=torch.float64)
        assert float((approx - exact).abs().max()) < tol * float(exact.abs().max())
        assert spearman(approx.numpy(), exact.numpy()) > 0.9


def test_graddrop_known_answers() -> None:
    """The last block's heads and MLP get their gradient only from that block's terms: of the L
    GradDrop passes, L - 1 keep |AtP| and the own-block pass gives 0, so AtP* = |AtP|. The last
    block's output is downstream of every dropped term: all L passes keep |AtP|, so AtP* =
    L / (L - 1) |AtP|."""
    ad = _adapter("gpt2")
    [est] = estimate(ad, [_run()], graddrop=True)
    L = ad.n_layers
    atp, star = est.atp, est.graddrop
    for kind in ("head", "mlp"):
        assert torch.allclose(star[kind][L - 1], atp[kind][L - 1].abs(), atol=1e-9)
    assert torch.allclose(star["resid"][L - 1], atp["resid"][L - 1].abs() * L / (L - 1))
    # Earlier blocks: cancellation through later blocks is dropped, so AtP* differs from |AtP|.
    assert not torch.allclose(star["mlp"][0, 2:], atp["mlp"][0, 2:].abs(), rtol=1e-3)


def test_batched_estimates_equal_single_runs() -> None:
    ad = _adapter("llama")
    other = [5, 9, 7, 12, 9, 10, 11]
    short = [5, 6, 7, 8, 9]
    runs = [_run(), _run(CLEAN, other), _run(short, [5, 6, 17, 8, 9]), _run(other, CORRUPT)]
    together = estimate(ad, runs, batch_size=3)
    for run, est in zip(runs, together, strict=True):
        [alone] = estimate(ad, [run], batch_size=1)
        for kind in ("head", "mlp", "resid"):
            assert torch.allclose(est.atp[kind], alone.atp[kind], atol=1e-6, equal_nan=True)
            assert torch.allclose(
                est.graddrop[kind], alone.graddrop[kind], atol=1e-6, equal_nan=True
            )


def _graddrop_by_full_passes(ad: ModelAdapter, run: Run) -> dict[str, torch.Tensor]:
    """GradDrop the slow way: L full backward passes, each with one block's terms gated off."""
    from lenslab.patching.atp import _combine, _instrument, _node_keys

    clean_ids, corrupt_ids = torch.tensor([run.clean_ids]), torch.tensor([run.corrupt_ids])
    clean, corrupt, holder = {}, {}, {"drop": None}
    with torch.no_grad(), _instrument(ad, (1, len(run.clean_ids)), clean):
        ad.model(input_ids=clean_ids, use_cache=False)
    keys = _node_keys(ad)
    deltas = {k: torch.zeros_like(clean[k], requires_grad=True) for k in keys}
    with torch.enable_grad(), _instrument(ad, (1, len(run.clean_ids)), corrupt, deltas, holder):
        logits = ad.model(input_ids=corrupt_ids, use_cache=False).logits[0, -1]
        metric = logits[run.clean_answer] - logits[run.corrupt_answer]
        total = None
        for layer in range(ad.n_layers):
            holder["drop"] = layer
            grads = torch.autograd.grad(
                metric, [deltas[k] for k in keys], retain_graph=True, allow_unused=True
            )
            part = {k: v.abs() for k, v in _combine(ad, keys, grads, clean, corrupt).items()}
            total = part if total is None else {k: total[k] + part[k] for k in part}
    return {k: v[0] / (ad.n_layers - 1) for k, v in total.items()}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "lfm2"])
def test_graddrop_shortcut_equals_full_backward_passes(arch: str) -> None:
    ad = _adapter(arch)
    [est] = estimate(ad, [_run()], graddrop=True)
    want = _graddrop_by_full_passes(ad, _run())
    for kind in est.graddrop:
        assert torch.allclose(est.graddrop[kind], want[kind], atol=1e-9, equal_nan=True)


# -- the F13c stage: tables, verification, summary, config, findings ---------------------------
PROMPT_SET = {
    "name": "toy",
    "prompts": [
        {"id": "a", "text": "w1 w2 w3 w4 w5 w6", "subject": "w3 w4", "answer": "w9"},
        {"id": "b", "text": "w1 w2 w7 w8 w5 w6", "subject": "w7 w8", "answer": "w10"},
        {"id": "c", "text": "w5 w2 w7 w8 w5 w6", "subject": "w7 w8", "answer": "w11"},
    ],
    "pairs": [{"clean": "a", "corrupt": "b"}, {"clean": "c", "corrupt": "a"}],
}


def test_stage_exact_values_equal_the_f13_sweep() -> None:
    """The stage's exact column is F13's own patching (same cases, answers, direction): its
    resid and MLP effects equal the sweep table's logit difference minus the corrupt one."""
    ad = _adapter("gpt2")
    pcfg = parse_config({"mode": "pairs", "kinds": ["resid", "mlp"], "window": 1})
    tables = run_atp(ad, PROMPT_SET, pcfg, parse_atp_config({}))
    nodes = tables["nodes"]
    assert nodes["verified"].all()  # 3 x (4 x 4 + 3 + 3) x 4 positions < verify_all
    sweep = run_patching(ad, PROMPT_SET, pcfg, progress=False)
    ld = sweep[(sweep["metric"] == "logit_diff") & (sweep["window"] == 1)]
    merged = nodes[nodes["kind"] != "head"].merge(
        ld, on=["prompt_id", "kind", "layer", "position"], validate="one_to_one"
    )
    assert len(merged) == (nodes["kind"] != "head").sum() > 0
    want = merged["value"] - merged["corrupt_value"]
    assert np.allclose(merged["exact"], want, atol=1e-5)
    assert np.allclose(merged["exact_norm"] * merged["span"], merged["exact"])
    # Positions before the first corrupted token are not nodes (a/b differ from position 2 on).
    assert nodes.groupby("prompt_id")["position"].min().to_dict() == {"a": 2, "c": 0}
    summary = tables["summary"]
    assert set(summary["kind"]) == {"head", "mlp", "resid"} and summary["complete"].all()
    assert (summary.loc[summary["kind"] == "head", "spearman"] > 0.9).all()


def test_noise_mode_stage_matches_the_f13_sweep_and_tracks_exact() -> None:
    """Noise mode: each noise sample is its own corrupted run, estimates and exact effects are
    means over samples; the exact column equals the F13 sweep's, AtP tracks it."""
    ad = _adapter("gpt2")
    pcfg = parse_config({"mode": "noise", "noise_samples": 3, "kinds": ["resid"], "window": 1})
    nodes = run_atp(ad, PROMPT_SET, pcfg, parse_atp_config({"kinds": ["resid", "head"]}))["nodes"]
    assert (nodes["n_samples"] == 3).all() and (nodes["mode"] == "noise").all()
    sweep = run_patching(ad, PROMPT_SET, pcfg, progress=False)
    ld = sweep[sweep["metric"] == "logit_diff"]
    merged = nodes[nodes["kind"] == "resid"].merge(
        ld, on=["prompt_id", "kind", "layer", "position"], validate="one_to_one"
    )
    assert np.allclose(merged["exact"], merged["value"] - merged["corrupt_value"], atol=1e-5)
    heads = nodes[nodes["kind"] == "head"]
    assert spearman(heads["atp"].to_numpy(), heads["exact"].to_numpy()) > 0.9


def test_verification_picks_top_k_and_a_seeded_random_sample() -> None:
    ad = _adapter("llama")
    pcfg = parse_config({"mode": "pairs"})
    acfg = parse_atp_config({"verify_all": 0, "verify_top_k": 3, "verify_random": 4})
    nodes = run_atp(ad, PROMPT_SET, pcfg, acfg)["nodes"]
    again = run_atp(ad, PROMPT_SET, pcfg, acfg)["nodes"]
    pd.testing.assert_frame_equal(nodes, again)  # same config, same table
    for _, rows in nodes.groupby(["prompt_id", "kind"]):
        picked = rows[rows["verified"]]
        assert (
            np.isfinite(picked["exact"]).all() and rows.loc[~rows["verified"], "exact"].isna().all()
        )
        for method in ("atp", "atp_star"):
            top = rows[method].abs().nlargest(3).index
            assert rows.loc[top, "verified"].all()
        assert 3 <= len(picked) <= 3 * 2 + 4


def test_summary_and_misses_by_hand() -> None:
    exact = [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    atp = [0.1, 0.45, 0.3, 0.2, 0.12, 0.0]  # the top node is underestimated: a false negative
    nodes = pd.DataFrame(
        {
            "prompt_id": "p", "kind": "mlp", "layer": range(6), "head": -1, "position": 3,
            "token": "x", "verified": True, "exact_norm": exact, "atp_norm": atp,
            "atp_star_norm": np.abs(exact),
        }
    )  # fmt: skip
    summary = summarise(nodes, k=2).set_index("method")
    # Ranks of atp: [2, 6, 5, 4, 3, 1] vs exact [6, 5, 4, 3, 2, 1]: Spearman 1 - 6*sum(d^2)/(n(n^2-1))
    d2 = (6 - 2) ** 2 + (5 - 6) ** 2 + (4 - 5) ** 2 + (3 - 4) ** 2 + (2 - 3) ** 2
    assert summary.loc["atp", "spearman"] == pytest.approx(1 - 6 * d2 / (6 * 35))
    assert summary.loc["atp", "recall_at_k"] == 0.5  # top-2 exact {0, 1}; estimate {1, 2}
    assert summary.loc["atp_star", "spearman"] == pytest.approx(1.0)
    assert summary.loc["atp", "max_abs_error"] == pytest.approx(0.4)
    found = misses(nodes, k=2, n=5)
    assert found[["method", "layer"]].values.tolist() == [["atp", 0]]


def test_atp_config_is_validated() -> None:
    assert parse_atp_config({}).verify_top_k == 10
    for bad in (
        {"verify_top_k": 0},
        {"verify_random": -1},
        {"kinds": ["attn"]},
        {"batch_size": 1.5},
        {"graddrop": "yes"},
        {"verfy_top_k": 3},
    ):
        with pytest.raises(LensLabError):
            parse_atp_config(bad)


def test_atp_findings_read_the_summary() -> None:
    summary = pd.DataFrame(
        {
            "kind": ["head", "head", "mlp", "mlp"],
            "method": ["atp", "atp_star"] * 2,
            "spearman": [0.97, 0.5, 0.9, 0.95],
            "n": [100, 100, 20, 20],
            "n_prompts": 2,
            "complete": True,
        }
    )
    found = {f.finding: f for f in atp_findings(summary, "atp")}
    assert set(found) == {"atp_spearman_head", "atp_star_spearman_head", "atp_spearman_mlp",
                          "atp_star_spearman_mlp"}  # fmt: skip
    assert found["atp_spearman_head"].holds and not found["atp_star_spearman_head"].holds
    assert found["atp_spearman_mlp"].value == 0.9
