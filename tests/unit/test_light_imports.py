"""Jobs that only read tables and draw (figures, tables, findings, report, gathering shards) must
not import torch or transformers: each job is a fresh process, and those imports cost it 3-5 s.

Each script's top-level imports and its top-level ``setup(...)`` call (which must not import
torch either) are read from the script with ``ast``, so the test follows the scripts as they
change; imports inside a branch (the model-loading half of ``figure_tuned_lens.py``) are the
heavy path and not checked."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import copy_project

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
LIGHT = sorted(p.name for p in SCRIPTS.glob("figure_*.py")) + [
    "lens_tables.py",
    "findings.py",
    "report.py",
    "gather_shards.py",
]
HEAVY = ("torch", "transformers", "safetensors.torch")


def _is_setup_call(node: ast.stmt) -> bool:
    """A ``setup(...)`` statement whose arguments are all literals (one that depends on the
    script's inputs, as in ``figure_tuned_lens.py``, cannot run outside the job)."""
    call = node.value if isinstance(node, ast.Expr) else None
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "setup"
        and all(
            isinstance(a, ast.Constant) for a in [*call.args, *(k.value for k in call.keywords)]
        )
    )


def top_level_code(script: Path) -> str:
    """The script's module-level imports and literal ``setup(...)`` calls, in order."""
    body = ast.parse(script.read_text()).body
    keep = [n for n in body if isinstance(n, ast.Import | ast.ImportFrom) or _is_setup_call(n)]
    return "\n".join(ast.unparse(n) for n in keep)


@pytest.mark.parametrize("name", LIGHT)
def test_light_script_imports_no_torch(name):
    check = f"import sys\nheavy = [m for m in {HEAVY!r} if m in sys.modules]\nprint(heavy)\n"
    code = top_level_code(SCRIPTS / name) + "\n" + check + "assert not heavy, heavy\n"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, f"{name} imports {proc.stdout.strip()}\n{proc.stderr[-2000:]}"


def test_snakemake_plans_without_torch(tmp_path):
    """Snakemake validates the study and plans shards in its own process: every `snakemake`
    call (dry runs included) pays for what that process imports, so it imports no torch.
    (It does import transformers: validation tokenizes every prompt with the model's tokenizer.)"""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('TORCH', 'torch' in sys.modules))\n"
        "from snakemake.cli import main\n"
        "sys.argv = ['snakemake', '-n', '--nolock', '--cores', '1', '--config', 'study=test']\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    project = copy_project(tmp_path / "project")  # a dry run still writes .snakemake/ there
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "TORCH False" in out, out[-3000:]
