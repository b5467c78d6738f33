"""Code inputs are computed: each scripted rule depends on the library files its script runs
(lenslab.codedeps), so editing a module reruns exactly the jobs that use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from lenslab.codedeps import imported_modules, library_inputs

SRC, SCRIPTS = REPO / "src", REPO / "scripts"
ALL_SCRIPTS = sorted(p.stem for p in SCRIPTS.glob("*.py"))


def lib(script: str) -> set[str]:
    """Library modules (``models/load``) the script's rule depends on."""
    files = library_inputs(SCRIPTS / f"{script}.py", SRC)
    return {str(Path(f).relative_to(SRC / "lenslab").with_suffix("")) for f in files}


def test_known_answers():
    """Hand-checked: the files the issue found missing are inputs where they run, and a figure
    job that only reads tables does not depend on the model code."""
    assert {"skipped", "devices", "models/files", "gate/fidelity"} <= lib("dla")
    assert {"devices", "models/load", "extract"} <= lib("extract")
    assert "skipped" in lib("patching") and "shards" in lib("patching")
    assert {"figures/logit_lens", "lenses/catalog", "stats/config"} <= lib("figure_logit_lens")
    assert not {"models/adapter", "lenses/base", "gate/fidelity"} & lib("figure_logit_lens")
    assert {"report", "report_js", "figures/save"} <= lib("report")


def test_lazy_names_count_only_when_imported(tmp_path):
    """`from pkg import Name` follows the package's lazy map to Name's module; importing a
    light submodule of the package does not pull in the others."""
    pkg = tmp_path / "lenslab" / "pkg"
    pkg.mkdir(parents=True)
    (tmp_path / "lenslab" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text('_LAZY = {"Heavy": "lenslab.pkg.heavy"}\n')
    (pkg / "heavy.py").write_text("Heavy = 1\n")
    (pkg / "light.py").write_text("X = 1\n")
    user = tmp_path / "user.py"
    user.write_text("from lenslab.pkg import Heavy\n")
    other = tmp_path / "other.py"
    other.write_text("import lenslab.pkg.light\nif TYPE_CHECKING:\n    import lenslab.pkg.heavy\n")
    assert "lenslab.pkg.heavy" in imported_modules(tmp_path, user)
    files = {Path(f).name for f in library_inputs(other, tmp_path)}
    assert files == {"__init__.py", "light.py"}


RUNTIME_IMPORTS = """
import ast, json, sys
out = {}
for name, path in json.loads(sys.argv[1]).items():
    for m in [m for m in sys.modules if m.split(".")[0] == "lenslab"]:
        del sys.modules[m]  # lenslab afresh per script; torch and the rest stay loaded
    tree = ast.parse(open(path).read())
    body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), {})
    out[name] = sorted(m for m in sys.modules if m.split(".")[0] == "lenslab")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def runtime_imports() -> dict[str, list[str]]:
    """The lenslab modules Python actually loads when each script's top-level imports run (one
    fresh interpreter; lenslab is unloaded between scripts)."""
    paths = {name: str(SCRIPTS / f"{name}.py") for name in ALL_SCRIPTS}
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-c", RUNTIME_IMPORTS, json.dumps(paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_runtime_imports_are_inputs(script, runtime_imports):
    """An independent computation: every module the script really loads is a code input."""
    loaded = {
        m.replace("lenslab", "", 1).lstrip(".").replace(".", "/") for m in runtime_imports[script]
    }
    inputs = {m.removesuffix("/__init__").removesuffix("__init__") for m in lib(script)}
    assert loaded - inputs == set(), f"{script} runs modules its rule does not depend on"
