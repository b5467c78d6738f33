"""requirements.lock, environment.yml and pyproject.toml describe the same environment."""

import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "dev"))
from sync_environment import lock_pins  # noqa: E402


def _lock() -> dict[str, str]:
    pins = lock_pins((REPO / "requirements.lock").read_text())
    return {p.split("==")[0].lower().replace("_", "-"): p.split("==")[1] for p in pins}


def _pip_list_of_environment_yml() -> list[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_environment_yml_pins_exactly_the_lock():
    pins = [p for p in _pip_list_of_environment_yml() if not p.startswith("-e")]
    assert pins == lock_pins((REPO / "requirements.lock").read_text())


def test_every_lock_pin_has_a_hash():
    text = (REPO / "requirements.lock").read_text()
    blocks = [b for b in text.split("\n") if b and not b.startswith((" ", "#"))]
    assert blocks and all(b.endswith("\\") for b in blocks), "run `make lock`"


def test_lock_satisfies_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = _lock()
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(lock[name], prereleases=True), (name, lock[name])


def test_torch_is_the_cpu_wheel():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert _lock()["torch"] == "2.13.0+cpu"
