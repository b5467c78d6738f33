"""A real edit of a library module in a finished study reruns exactly the rules whose scripts
import it (the computed code inputs, lenslab.codedeps, end to end through Snakemake)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import REPO, run_project

from lenslab.codedeps import library_inputs

SRC, SCRIPTS = REPO / "src", REPO / "scripts"


def lib(script: str) -> set[str]:
    """Library modules (``models/load``) the script's rule depends on."""
    files = library_inputs(SCRIPTS / f"{script}.py", SRC)
    return {str(Path(f).relative_to(SRC / "lenslab").with_suffix("")) for f in files}


EDITED = ["skipped", "devices", "figures/save", "lenses/catalog"]


def _dry_run(project: Path, args: list[str]) -> tuple[set[str], set[str]]:
    """(every rule a dry run would run, the rules it runs because of a changed lenslab file)."""
    out = run_project(project, "-n", "--nolock", *args, timeout=600)
    rules, because, current = set(), set(), None
    for line in out.splitlines():
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


@pytest.fixture(scope="module")
def study_rules(test_study_project, test_study_args) -> set[str]:
    """Rules with at least one job in the test study (a forced dry run lists every job)."""
    return _dry_run(test_study_project, [*test_study_args, "--forceall"])[0]


@pytest.mark.parametrize("module", EDITED)
def test_a_real_edit_reruns_exactly_its_jobs(
    module, test_study_project, test_study_args, study_rules
):
    """Edit one module's contents in a copy of the finished test study: every rule whose script
    imports it reruns, and no other rule reruns because of it (rules downstream of a rerun
    job rerun too, for their updated inputs, which Snakemake gives as their reason)."""
    project = test_study_project
    assert _dry_run(project, test_study_args)[0] == set(), "the test study is not up to date"
    users = {rule for rule, script in _rules_running(project).items() if module in lib(script)}
    planned = users & study_rules
    assert planned, f"no rule of the test study runs {module}: pick another module"
    path = project / "src" / "lenslab" / f"{module}.py"
    text, stat = path.read_text(), path.stat()
    try:
        path.write_text(text + "\n# an edit\n")
        rerun, because = _dry_run(project, test_study_args)
    finally:
        path.write_text(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the study stays up to date
    assert planned <= rerun, f"editing {module} does not rerun {sorted(planned - rerun)}"
    assert because and because <= planned, f"rerun because of {module}: {sorted(because - planned)}"
