"""environment.yml and pyproject.toml describe the same environment."""

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _pip_list_of_environment_yml() -> set[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {p.replace(" ", "") for p in pip if not p.startswith("-e")}


def test_dependency_lists_agree():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    assert {p.replace(" ", "") for p in wanted} == _pip_list_of_environment_yml()


def test_torch_is_pinned_to_the_cpu_wheel_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
