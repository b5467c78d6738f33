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
