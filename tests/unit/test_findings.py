"""lenslab.findings: each claim computed from small hand-made tables with known answers."""

import pandas as pd
import pytest

from lenslab import findings


def test_training_findings_compare_with_their_thresholds():
    rows = findings.training_findings({"facts_accuracy": 1.0, "copy_heldout_accuracy": 0.5})
    got = {f.finding: (f.value, f.holds) for f in rows}
    assert got == {"facts_accuracy": (1.0, True), "copy_heldout_accuracy": (0.5, False)}


def _patching_rows(prompt: str, n_tokens: int, subject: int, values: dict[int, float]):
    """Single-layer resid rows at layer 0 for one prompt; ``values`` by position."""
    return [
        {
            "prompt_id": prompt,
            "mode": "pairs",
            "kind": "resid",
            "window": 1,
            "metric": "norm_ld",
            "layer": 0,
            "position": t,
            "is_subject": t == subject,
            "value": values.get(t, 0.0),
        }
        for t in range(n_tokens)
    ]


def test_rome_contrast_is_last_subject_minus_last_token_at_block_0():
    table = pd.DataFrame(
        _patching_rows("a", 6, 3, {3: 0.9, 5: 0.1}) + _patching_rows("b", 5, 1, {1: 0.7, 4: 0.3})
    )
    got = {f.finding: f for f in findings.rome_findings(table, "t")}
    assert got["rome_last_subject_block0"].value == pytest.approx(0.8)
    assert got["rome_contrast_block0"].value == pytest.approx(0.6)
    assert got["rome_contrast_block0"].holds
    flipped = table.assign(value=table["value"].where(~table["is_subject"], 0.0))
    assert not {f.finding: f for f in findings.rome_findings(flipped, "t")}[
        "rome_contrast_block0"
    ].holds


def test_emergence_reads_the_answer_rank_at_the_last_position():
    rows = []
    for prompt, ranks in (("p", [50, 3, 1]), ("q", [9, 1, 1])):
        for layer, rank in enumerate(ranks):
            for position, r in ((0, 1), (2, rank)):  # position 0 is not the last: ignored
                rows.append(
                    dict(prompt_id=prompt, lens="logit", role="answer", layer=layer,
                         position=position, rank=r)
                )  # fmt: skip
    got = {f.finding: f for f in findings.emergence_findings(pd.DataFrame(rows), "t")}
    assert got["answer_top1_after_block0"].value == 0.5  # q is already top-1 after block 0
    assert got["answer_top1_output"].value == 1.0
    assert got["answer_top1_after_block0"].holds and got["answer_top1_output"].holds


def test_tuned_lens_finding_is_the_worst_layer_ratio_and_ignores_the_output():
    kl = {"logit": [8.0, 4.0, 0.0], "tuned": [1.0, 2.0, 0.0]}
    table = pd.DataFrame(
        [
            dict(lens=lens, layer=layer, metric="kl", unit="nats_per_token", value=v)
            for lens, values in kl.items()
            for layer, v in enumerate(values)
        ]
    )
    (f,) = findings.tuned_lens_findings(table, "t")
    assert f.value == 0.5 and f.holds
    table.loc[(table.lens == "tuned") & (table.layer == 1), "value"] = 4.0
    (f,) = findings.tuned_lens_findings(table, "t")
    assert f.value == 1.0 and not f.holds


def test_table_has_one_row_per_finding_with_holds():
    rows = findings.training_findings({"facts_accuracy": 0.96, "copy_heldout_accuracy": 0.99})
    table = findings.findings_table(rows, "embedded")
    assert list(table.columns) == ["model", *findings.COLUMNS]
    assert table["holds"].tolist() == [True, True]


def _jlens_table(kl: dict[str, list[float]], top1: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for metric, unit, values in (("kl", "nats_per_token", kl), ("top1", "share", top1)):
        for lens, per_layer in values.items():
            rows += [(lens, i, metric, unit, v) for i, v in enumerate(per_layer)]
    return pd.DataFrame(rows, columns=["lens", "layer", "metric", "unit", "value"])


def test_jacobian_lens_findings_measure_the_papers_claim_per_layer():
    from lenslab.findings import jacobian_lens_findings

    kl = {  # the default embedded model's held-out numbers (rounded), layers 0..3 of 4
        "logit": [22.2, 8.2, 4.3, 0.0],
        "tuned": [1.26, 0.92, 0.30, 0.0],
        "jacobian": [7.7, 6.3, 5.4, 0.0],
    }
    top1 = {"logit": [0.0, 0.10, 0.20, 1.0], "tuned": [0.5, 0.6, 0.8, 1.0],
            "jacobian": [0.04, 0.06, 0.25, 1.0]}  # fmt: skip
    got = {f.finding: f for f in jacobian_lens_findings(_jlens_table(kl, top1), "eval")}
    assert sorted(got) == sorted(
        ["tuned_over_jlens_kl_max", "jlens_over_logit_kl_embeddings"]
        + [f"jlens_over_logit_kl_l{i}" for i in (1, 2)]
        + [f"jlens_minus_logit_top1_l{i}" for i in (1, 2)]
    )
    assert got["tuned_over_jlens_kl_max"].value == pytest.approx(1.26 / 7.7)
    assert got["tuned_over_jlens_kl_max"].holds
    assert got["jlens_over_logit_kl_embeddings"].value == pytest.approx(7.7 / 22.2)
    assert got["jlens_over_logit_kl_l1"].holds  # 6.3 < 8.2
    assert not got["jlens_over_logit_kl_l2"].holds  # 5.4 > 4.3: reported as not holding
    assert not got["jlens_minus_logit_top1_l1"].holds
    assert got["jlens_minus_logit_top1_l2"].value == pytest.approx(0.05)


# -- real-model findings: hand-made tables with known answers ---------------------------------


def _lens_rows(prompt: str, kl_by_layer: list[float], n_pos: int = 2):
    return [
        {"prompt_id": prompt, "lens": "logit", "layer": layer, "position": p, "kl_final": kl}
        for layer, kl in enumerate(kl_by_layer)
        for p in range(n_pos)
    ]


def test_logit_kl_findings_ratio_and_rank_correlation():
    # 5 layers (L = 4): mid = 2, late = 3. Prompt a falls monotonically, b rises then falls.
    table = pd.DataFrame(_lens_rows("a", [50, 8, 4, 2, 0]) + _lens_rows("b", [50, 4, 8, 1, 0]))
    got = {f.finding: f for f in findings.logit_kl_findings(table, "t")}
    ratio = got["logit_kl_late_over_mid"]
    assert ratio.value == pytest.approx((2 / 4 + 1 / 8) / 2) and ratio.holds and ratio.n == 2
    assert ratio.ci_low <= ratio.value <= ratio.ci_high
    rho = got["logit_kl_depth_rho"]  # a: ranks 3,2,1 -> -1; b: ranks 2,3,1 -> -0.5
    assert rho.value == pytest.approx(-0.75) and not rho.holds


def test_tuned_vs_logit_counts_layers_below_and_the_worst_ratio():
    rows = []
    for layer, (logit, tuned) in enumerate([(9.0, 3.0), (4.0, 2.0), (1.0, 1.5), (0.0, 0.0)]):
        for lens, v in (("logit", logit), ("tuned", tuned)):
            rows.append(
                {"lens": lens, "layer": layer, "metric": "kl", "unit": "nats_per_token", "value": v}
            )
    got = {f.finding: f for f in findings.tuned_vs_logit_findings(pd.DataFrame(rows), "t")}
    assert got["tuned_below_logit_layers"].value == pytest.approx(2 / 3)
    assert not got["tuned_below_logit_layers"].holds
    assert (
        got["tuned_over_logit_kl_max"].value == pytest.approx(1.5)
        and not got["tuned_over_logit_kl_max"].holds
    )
    # with the per-layer intervals: the worst layer's (2) conservative ratio interval
    table = pd.DataFrame(rows).assign(ci_low=lambda d: d.value * 0.5, ci_high=lambda d: d.value * 2)
    worst = {f.finding: f for f in findings.tuned_vs_logit_findings(table, "t")}
    assert (worst["tuned_over_logit_kl_max"].ci_low, worst["tuned_over_logit_kl_max"].ci_high) == (
        pytest.approx(1.5 / 4),
        pytest.approx(1.5 * 4),
    )


def _trace(prompt, kind, window, n_layers, n_tokens, subject, value):
    """Patching rows for one kind; ``value(layer, position)`` gives each cell."""
    return [
        {"prompt_id": prompt, "mode": "noise", "kind": kind, "window": window,
         "metric": "norm_ld", "layer": b, "position": t, "is_subject": t in subject,
         "value": value(b, t)}
        for b in range(n_layers) for t in range(n_tokens)
    ]  # fmt: skip


def test_rome_real_findings_on_a_hand_made_trace():
    # 12 blocks; subject at positions 1-2 of 5 tokens; the last token is 4. Resid: the last
    # subject token carries the fact up to block 6, the last token from block 7 on. MLP peaks at
    # the subject at block 2 (layer 3), attention at the last token at block 9 (layer 10).
    def resid(b, t):
        return 0.8 if (t == 2 and b <= 6) else (0.9 if (t == 4 and b >= 7) else 0.0)

    rows = []
    for pid in ("a", "b", "c"):
        rows += _trace(pid, "resid", 1, 12, 5, [1, 2], resid)
        rows += _trace(
            pid, "mlp", 3, 12, 5, [1, 2], lambda b, t: 0.5 if (t == 2 and b == 2) else 0.1
        )
        rows += _trace(
            pid, "attn", 3, 12, 5, [1, 2], lambda b, t: 0.5 if (t == 4 and b == 9) else 0.1
        )
    got = {f.finding: f for f in findings.rome_real_findings(pd.DataFrame(rows), 12, "t")}
    assert got["rome_subject_early_mid"].value == pytest.approx(0.8)
    assert got["rome_last_token_early"].value == pytest.approx(0.0)
    # late: blocks 8..11 (>= 2 * 12 // 3 = 8), all 0.9
    assert got["rome_last_token_late"].value == pytest.approx(0.9)
    assert got["rome_mlp_subject_peak_depth"].value == pytest.approx(3 / 12)
    assert got["rome_attn_last_peak_depth"].value == pytest.approx(10 / 12)
    assert all(f.holds for f in got.values())
    assert got["rome_subject_early_mid"].n == 3


def test_patchscope_and_lookahead_findings_count_by_hand():
    ident = pd.DataFrame(
        [
            {"prompt_id": p, "layer": layer, "target_layer": layer, "method": m, "correct": c}
            for p in ("a", "b")
            for layer in (1, 2, 3, 4)
            for m, c in (("patchscope", layer <= 2), ("logit", layer == 2))
        ]
    )
    (f,) = findings.patchscope_findings(ident, 4, "t")
    assert f.value == pytest.approx(0.5) and f.holds  # layers 1-2: 1.0 vs 0.5
    # look-ahead: tokens 10 11 12 13; layer 1's top 5 at t holds token t+2, layer 2's not.
    rows = []
    ids = [10, 11, 12, 13]
    for layer in (0, 1, 2):
        for t, tok in enumerate(ids):
            top = [ids[t + 2] if (layer == 1 and t + 2 < 4) else 99, 98, 97, 96, 95]
            rows.append({"prompt_id": "c", "lens": "logit", "layer": layer, "position": t,
                         "token_id": tok, **{f"top{i + 1}_id": v for i, v in enumerate(top)}})  # fmt: skip
    got = {f.finding: f for f in findings.lookahead_findings(pd.DataFrame(rows), "t")}
    assert got["lookahead_t2_best_layer"].value == pytest.approx(1.0)
    assert "layer 1" in got["lookahead_t2_best_layer"].claim
    assert got["lookahead_t2_output"].value == pytest.approx(0.0)
