"""Nothing lost, nothing silent (issue 15): the test study in a copy of the project, then
deletions, a corrupt file, kill -9 and Ctrl-C in the middle of a rule; after each, a plain
`snakemake` run restores every result file byte for byte."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import copy_project, project_env, snakemake_in

MODEL = "embedded-test"


def command(project: Path, *args: str) -> list[str]:
    return snakemake_in(project, *args)


def env(project: Path) -> dict[str, str]:
    return project_env(project)


def smk(project: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        command(project, *args), cwd=project, env=env(project), capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def snapshot(project: Path) -> dict[str, str]:
    """sha256 of every result file (logs aside: they hold timings)."""
    results = project / "results"
    return {
        str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(results.rglob("*"))
        if p.is_file() and "logs" not in p.relative_to(results).parts
    }


def interrupt(
    project: Path, sig: int, *args: str, when=None, settle: float = 1.0
) -> subprocess.Popen:
    """Start a run in its own process group; once ``when()`` holds (default: a job has marked
    its outputs incomplete, i.e. it is running), send ``sig`` to the whole group, as a terminal
    does for Ctrl-C, or as `kill -9` of everything would."""
    marks = project / ".snakemake" / "incomplete"
    when = when or (lambda: marks.is_dir() and any(marks.iterdir()))
    proc = subprocess.Popen(
        command(project, *args), cwd=project, env=env(project), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not when():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(settle)  # well inside the job: its script is importing or computing
    os.killpg(proc.pid, sig)
    proc.communicate(timeout=300)
    return proc


def incomplete(project: Path) -> list[str]:
    marks = project / ".snakemake" / "incomplete"
    names = [p.name for p in marks.iterdir()] if marks.is_dir() else []
    return [base64.b64decode(n).decode() for n in names]


@pytest.fixture(scope="module")
def study(test_study_args) -> list[str]:
    return test_study_args


@pytest.fixture(scope="module")
def project(test_study_project) -> tuple[Path, dict[str, str]]:
    """The session's test-study project and the checksums of its results."""
    return test_study_project, snapshot(test_study_project)


R = "test"  # the study's results directory, results/<study>/


@pytest.mark.slow
def test_rule_all_asks_for_every_table_and_each_rule_logs(project):
    proj, reference = project
    for table in (
        f"{R}/activations/{MODEL}/embedded_facts/resid.safetensors",
        f"{R}/lens/{MODEL}/embedded_facts/logit.targets.parquet",
        f"{R}/lens/{MODEL}/embedded_facts/agg/lens_compare.parquet",
        f"{R}/tables/{MODEL}/embedded_capital_pair/F1_difference.parquet",
        f"{R}/patching/{MODEL}/embedded_facts.parquet",
        f"{R}/attribution/{MODEL}/embedded_facts.parquet",
        f"{R}/report.html",
    ):
        assert table in reference
    assert all(name.startswith(f"{R}/") for name in reference)  # one directory per study
    log = proj / f"results/{R}/logs/patching/{MODEL}_embedded_facts.log"
    assert "patching embedded-test/embedded_facts: runner" in log.read_text()


@pytest.mark.slow
def test_copied_project_does_not_rerun(project, study, tmp_path):
    proj, _ = project
    copy = tmp_path / "moved"
    shutil.copytree(proj, copy, symlinks=True)
    out = smk(copy, "-n", *study)
    assert "Nothing to be done" in out.stdout + out.stderr


@pytest.mark.slow
def test_deleted_results_are_rebuilt_by_a_plain_run(project, study):
    proj, reference = project
    for name in (
        f"{R}/activations/{MODEL}/embedded_facts/resid.safetensors",
        f"{R}/lens/{MODEL}/embedded_facts/logit.targets.parquet",
        f"{R}/figures/F1_{MODEL}_embedded_capital_pair.png",
    ):
        (proj / "results" / name).unlink()
    smk(proj, *study)
    assert snapshot(proj) == reference


@pytest.mark.slow
def test_corrupt_file_fails_naming_the_log_and_heals_once_deleted(project, study):
    proj, reference = project
    table = proj / f"results/{R}/tables/{MODEL}/embedded_capital_pair/F1_difference.parquet"
    table.write_bytes(b"not a parquet file")
    failed = smk(proj, *study, ok=False)
    text = failed.stdout + failed.stderr
    log = f"results/{R}/logs/figure_F1/{MODEL}_embedded_capital_pair.log"
    assert failed.returncode != 0
    assert "lenslab job failed: cannot read" in text and "Fix: the file is missing" in text
    assert log in text and "Traceback" in (proj / log).read_text()
    table.unlink()  # as the message says
    smk(proj, *study)
    assert snapshot(proj) == reference


@pytest.mark.slow
def test_kill_9_mid_rule_then_unlock_and_plain_run_restores_every_file(project, study):
    proj, reference = project
    killed = interrupt(proj, signal.SIGKILL, "--forcerun", "patching", *study)
    assert killed.returncode == -signal.SIGKILL
    assert incomplete(proj), "no job was running when the run was killed"
    smk(proj, "--unlock", *study)
    smk(proj, *study)
    assert snapshot(proj) == reference and not incomplete(proj)


@pytest.mark.slow
def test_ctrl_c_mid_rule_then_plain_run_restores_every_file(project, study):
    proj, reference = project
    (proj / f"results/{R}/attribution/{MODEL}/embedded_facts.parquet").unlink()
    (proj / f"results/{R}/lens/{MODEL}/embedded_facts/logit.parquet").unlink()
    stopped = interrupt(proj, signal.SIGINT, *study)
    assert stopped.returncode != 0
    smk(proj, *study)
    assert snapshot(proj) == reference


@pytest.mark.slow
def test_a_second_study_writes_only_under_its_own_directory(project):
    proj, reference = project
    out = smk(proj, "-n", "--config", "study=default").stdout
    outputs = [
        path.strip(",")
        for line in out.splitlines()
        if line.strip().startswith("output:")
        for path in line.split()[1:]
    ]
    assert outputs and "results/default/report.html" in outputs
    assert all(p.startswith(("results/default/", "results/models/")) for p in outputs)
    assert snapshot(proj) == reference


def test_bad_input_fails_before_any_job_runs(tmp_path):
    """An unknown word: the DAG is never built, nothing is written, and the message names it."""
    proj = copy_project(tmp_path / "lenslab")
    text = "prompts.embedded_facts.prompts.0.text='The capital of Atlantis is'"
    proc = smk(proj, "--config", "study=test", f'overrides=["{text}"]', ok=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "does not know the word(s) ['Atlantis']" in message and "Fix:" in message
    assert not (proj / "results").exists()


TINY_TRAINING = {
    "steps": 400,
    "n_layer": 2,
    "stage1_layers": 1,
    "stage1_steps": 120,
    "stage1_copy_target": 0.0,
    "batch_size": 4,
    "warmup_steps": 5,
    "num_threads": 1,
    "eval_copy_items": 20,
}


@pytest.mark.slow
def test_ctrl_c_during_training_keeps_the_checkpoint_and_a_plain_rerun_resumes(tmp_path):
    from lenslab.config import load_config, to_plain
    from lenslab.embedded.train import checkpoint_dir, train_embedded_model

    proj = copy_project(tmp_path / "lenslab")
    overrides = [f"++models.{MODEL}.embedded.{k}={v}" for k, v in TINY_TRAINING.items()]
    args = ["--config", "study=test", f"overrides=[{','.join(overrides)}]"]
    target = f"results/models/{MODEL}"
    state = checkpoint_dir(proj / target) / "state.pt"
    stopped = interrupt(proj, signal.SIGINT, target, *args, when=state.exists, settle=0)
    assert stopped.returncode != 0
    assert not (proj / target).exists() and state.exists()  # Snakemake removed the output only
    smk(proj, target, *args)
    log = (proj / f"results/logs/train_embedded/{MODEL}.log").read_text()
    assert "resuming embedded-test at step " in log and not state.parent.exists()
    settings = to_plain(load_config("test", overrides).models[MODEL].embedded)
    train_embedded_model(settings, tmp_path / "whole", progress=False)
    for name in ("model.safetensors", "metrics.json"):
        assert (proj / target / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
