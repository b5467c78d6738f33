"""The Snakemake workflow, run for real on the small embedded model in a temporary directory."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lenslab.io import read_json, read_parquet

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2"]


def snakemake(workdir: Path, *args: str) -> str:
    """Run in ``workdir``: with its own Snakefile when it is a copy of the project."""
    own = workdir / "Snakefile"
    base = [*SNAKEMAKE[:4], str(own), *SNAKEMAKE[5:]] if own.exists() else SNAKEMAKE
    proc = subprocess.run(
        [*base, "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def jobs_in(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    lines = dry_run_output.split("Job stats:")[-1].splitlines()
    counts = {}
    for line in lines[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    counts.pop("total", None)
    return counts


def study(*overrides: str) -> list[str]:
    """--config arguments for the test study with Hydra overrides."""
    return ["--config", "study=test", f"overrides=[{','.join(overrides)}]"]


@pytest.fixture(scope="module")
def trained(embedded_test_dir) -> str:
    """Point the test study at the session's trained model so the workflow does not retrain it
    (the training rule itself is exercised by the default study and the dry runs below)."""
    return f"models.embedded-test.source={embedded_test_dir}"


@pytest.fixture(scope="module")
def study_run(test_study_project) -> Path:
    """The test study, built once per session in a copy of the project (tests/conftest.py)."""
    return test_study_project


@pytest.mark.slow
def test_test_study_produces_figures_and_report(study_run):
    results = study_run / "results" / "test"
    report = (results / "report.html").read_text()
    figure = results / "figures" / "F1_embedded-test_embedded_capital_pair"
    for ext in ("png", "svg", "json"):
        assert figure.with_suffix(f".{ext}").stat().st_size > 0
    assert html.escape(read_json(figure.with_suffix(".json"))["caption"]) in report
    f10 = read_json(results / "figures" / "F10_embedded-test_embedded_facts.json")
    assert f10["figure"] == "F10" and html.escape(f10["caption"]) in report
    assert str(study_run) not in report and str(REPO) not in report  # no absolute paths


@pytest.mark.slow
def test_f1_table_matches_a_direct_computation(study_run, embedded_test_dir):
    results = study_run / "results" / "test"
    table = read_parquet(
        results / "tables/embedded-test/embedded_capital_pair/F1_difference.parquet"
    )
    model_dir = embedded_test_dir
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        a = model(
            **tok("The capital of France is Paris.", return_tensors="pt"), output_hidden_states=True
        ).hidden_states
        b = model(
            **tok("The capital of Germany is Berlin.", return_tensors="pt"),
            output_hidden_states=True,
        ).hidden_states
    n_layers = len(a) - 1
    assert table.row.max() == n_layers + 1  # embeddings, every block, the final-normed state
    for hf_index, row in enumerate([*range(n_layers), n_layers + 1]):
        expected = (a[hf_index][0] - b[hf_index][0]).norm(dim=-1)
        got = torch.tensor(table[table.row == row].sort_values("position").l2.values)
        torch.testing.assert_close(got.float(), expected, atol=1e-4, rtol=1e-4)
    # "The capital of" is shared: exactly zero there in every state.
    assert (table[table.position < 3].l2 == 0).all()


@pytest.mark.slow
def test_second_run_does_nothing_and_a_config_change_reruns_only_its_model(study_run, trained):
    out = snakemake(study_run, "-n", *study(trained))
    assert "Nothing to be done" in out
    jobs = jobs_in(snakemake(study_run, "-n", *study(trained, "models.embedded-test.batch_size=2")))
    assert jobs.get("extract") == 2 and "train_embedded" not in jobs
    jobs = jobs_in(snakemake(study_run, "-n", *study("models.embedded-test.embedded.seed=1")))
    assert jobs.get("train_embedded") == 1


def test_paper_study_dry_run(tmp_path):
    """The hub models cannot be downloaded here; the DAG and configs are still checked."""
    out = snakemake(tmp_path, "-n", "--config", "study=paper")
    jobs = jobs_in(out)
    assert jobs["extract"] >= 2 and jobs["figure_F1"] == 2 and jobs["figure_F10"] == 2
    assert jobs["figure_F14"] == 2 and jobs["figure_F15"] == 2 and jobs["figure_F16"] == 2
    assert "train_embedded" not in jobs


@pytest.mark.slow
def test_snakemake_report_holds_every_figure_with_its_caption(study_run, trained):
    """`snakemake --report` (the Snakemake convention): figures grouped by family, captioned."""
    import zipfile

    snakemake(study_run, "--report", "snakemake-report.zip", *study(trained))
    with zipfile.ZipFile(study_run / "snakemake-report.zip") as archive:
        names = archive.namelist()
        text = "".join(
            archive.read(n).decode("utf-8", "replace")
            for n in names
            if n.endswith((".js", ".html"))
        )
    figures = [n for n in names if n.endswith(".png") and "/F" in n]
    assert {n.rsplit("/", 1)[-1].split("_")[0] for n in figures} >= {"F1", "F2", "F10", "F13"}
    assert any(n.endswith("report.html") for n in names)
    for family in ("hidden-state differences", "logit lens", "attribution", "causal tracing"):
        assert family in text
    assert "layer l = resid[l]" in text and "F10 direct logit attribution" in text
