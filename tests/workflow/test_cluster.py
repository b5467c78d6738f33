"""The `test` study three ways: one job per rule locally, with a sharded prompt set, and through
the slurm profile on a real SLURM (started by .ci/slurm-up.sh); all give the same bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lenslab.io import read_parquet

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
# One torch thread in every run: the runs must agree, and the machine is shared.
ENV = {**os.environ, "LENSLAB_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
MODEL = "embedded-test"
SHARDED = "embedded_facts"


def slurm_up() -> bool:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                              timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and any(
        s.strip("*~#") in {"idle", "mixed", "allocated"} for s in proc.stdout.split()
    )


def run(workdir: Path, *args: str, timeout: int = 1800) -> str:
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), *args],
        capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def files(root: Path) -> dict[str, bytes]:
    """Every result file but the jobs' logs (their progress bars carry timings)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "logs" not in p.relative_to(root).parts
    }


@pytest.fixture(scope="module")
def overrides(embedded_test_dir) -> list[str]:
    """The test study on the session's trained model (no retraining in every run)."""
    return [f"models.{MODEL}.source={embedded_test_dir}"]


def config(overrides: list[str]) -> list[str]:
    return ["--config", "study=test", f"overrides=[{','.join(overrides)}]"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, overrides) -> Path:
    workdir = tmp_path_factory.mktemp("local")
    run(workdir, "--profile", str(REPO / "workflow/profiles/local"), "--cores", "2",
        *config(overrides))  # fmt: skip
    return workdir


@pytest.mark.slow
def test_sharded_run_equals_one_job(local_run, tmp_path, overrides) -> None:
    shards = [*overrides, f"+prompts.{SHARDED}.shards=2"]
    out = run(tmp_path, "--cores", "2", *config(shards))
    for rule in ("extract_shard", "apply_lens_shard", "patching_shard", "gather_lens"):
        assert f"rule {rule}:" in out
    lens = f"results/test/lens/{MODEL}/{SHARDED}"
    tables = [
        f"{lens}/logit.parquet",
        f"{lens}/logit.targets.parquet",
        f"{lens}/agg/layer_means.parquet",
        f"{lens}/agg/target_means.parquet",
        f"results/test/patching/{MODEL}/{SHARDED}.parquet",
    ]
    for name in tables:
        assert (tmp_path / name).read_bytes() == (local_run / name).read_bytes(), name
    # both shards did work: 14 prompts in batches of 8 -> prompts 0-7 and 8-13
    shard1 = read_parquet(tmp_path / f"{lens}/shards/1/logit.parquet")
    assert sorted(shard1.prompt_index.unique()) == list(range(6))
    # every other output (tables, figures) is byte-identical as well; the report differs by
    # design: its provenance records the run's settings, `shards: 2` included
    local, sharded = files(local_run / "results"), files(tmp_path / "results")
    whole_set = f"test/activations/{MODEL}/{SHARDED}/"
    for name, data in local.items():
        if not name.startswith(whole_set) and not name.endswith("report.html"):
            assert sharded.get(name) == data, name


@pytest.mark.slow
@pytest.mark.skipif(not slurm_up(), reason="no SLURM node is up here: run `sudo .ci/slurm-up.sh`")
def test_slurm_profile_run_is_byte_identical_to_local(local_run, tmp_path, overrides) -> None:
    out = run(
        tmp_path,
        "--profile", str(REPO / "workflow/profiles/slurm"),
        # a single-node SLURM without an accounting database: job states come from squeue
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "5",
        *config(overrides),
    )  # fmt: skip
    assert "has been submitted with SLURM jobid" in out
    local, slurm = files(local_run / "results"), files(tmp_path / "results")
    assert sorted(slurm) == sorted(local)
    different = [name for name in local if slurm[name] != local[name]]
    assert not different
    assert any(name.endswith("report.html") for name in local)
