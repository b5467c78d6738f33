"""Helpers the tests import (``from helpers import ...``): the project's root, a copy of the
project to run its workflow in, and the command line and environment of such a run. Fixtures
live in conftest.py; plain functions live here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


PROJECT_PARTS = ("Snakefile", "workflow", "src", "scripts", "conf", "profiles")


def copy_project(dest: Path) -> Path:
    """The code of the project in ``dest``; results are written there, as in a checkout."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in PROJECT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore)
        else:
            shutil.copy2(src, dest / part)
    return dest


def snakemake_in(project: Path, *args: str) -> list[str]:
    """The command line of a run of ``project``'s own Snakefile, in ``project``."""
    snakefile = project / "Snakefile"
    return [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--cores", "2", *args]


def project_env(project: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(project / "src")}


def run_project(project: Path, *args: str, timeout: int = 1800) -> str:
    """Run ``project``'s own Snakefile in ``project``; it must succeed. Returns its output."""
    proc = subprocess.run(
        snakemake_in(project, *args),
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr
