"""A real edit of a library module in a finished study reruns exactly the rules whose scripts
import it (the computed code inputs, lenslab.codedeps, end to end through Snakemake)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, project_env, snakemake_in

from lenslab.codedeps import library_inputs

SRC, SCRIPTS = REPO / "src", REPO / "scripts"


def lib(script: str) -> set[str]:
    """Library modules (``models/load``) the script's rule depends on."""
    files = library_inputs(SCRIPTS / f"{script}.py", SRC)
    return {str(Path(f).relative_to(SRC / "lenslab").with_suffix("")) for f in files}


EDITED = ["skipped", "devices", "models/probe", "figures/save", "lenses/catalog", "findings"]


def _dry_run(project: Path, args: list[str]) -> tuple[set[str], set[str]]:
    """(every rule a dry run would run, the rules it runs because of a changed lenslab file)."""
    proc = subprocess.run(
        snakemake_in(project, "-n", "--nolock", *args),
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rules, because, current = set(), set(), None
    for line in (proc.stdout + proc.stderr).splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            current = m.group(1)
            rules.add(current)
        elif "reason:" in line and "src/lenslab/" in line and current:
            because.add(current)
    return rules - {"all"}, because


def _rules_running(project: Path) -> dict[str, str]:
    """Rule name -> script of every scripted rule of the project."""
    out = {}
    for smk in (project / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule )", smk.read_text(), flags=re.M):
            name = re.match(r"rule (\w+):", block)
            script = re.search(r'scripts/(\w+)\.py"', block)
            if name and script:
                out[name.group(1)] = script.group(1)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("module", EDITED)
def test_a_real_edit_reruns_exactly_its_jobs(module, test_study_project, test_study_args):
    """Edit one module's contents in a copy of the finished test study: the dry run reruns,
    because of that file, exactly the rules whose scripts import it (jobs downstream of them
    rerun too, for their updated inputs)."""
    project = test_study_project
    assert _dry_run(project, test_study_args)[0] == set(), "the test study is not up to date"
    users = {rule for rule, script in _rules_running(project).items() if module in lib(script)}
    assert users, f"no rule runs {module}: pick another module"
    path = project / "src" / "lenslab" / f"{module}.py"
    text, stat = path.read_text(), path.stat()
    try:
        path.write_text(text + "\n# an edit\n")
        rerun, because = _dry_run(project, test_study_args)
    finally:
        path.write_text(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the study stays up to date
    planned = {r for r in users if r in _rules_in_study(project, test_study_args)}
    assert because == planned, f"rerun because {module} changed: {sorted(because ^ planned)}"
    assert planned <= rerun


def _rules_in_study(project: Path, args: list[str]) -> set[str]:
    """Rules with at least one job in the study (a forced dry run lists every job)."""
    return _dry_run(project, [*args, "--forceall"])[0]
