"""Checks of how the pipeline was launched (``snakemake ... --config ...``), run by the rule
files before the study is composed. Pipeline layer, torch-free."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lenslab.errors import LensLabError

# Every key `--config` takes (workflow/snakemake.yaml holds their defaults).
CONFIG_KEYS = ("study", "overrides", "benchmarks")


def check_launch(
    config: Mapping[str, Any], project: Path, cwd: Path, chosen_dir: bool = False
) -> None:
    """Refuse unknown ``--config`` keys, and a run from outside the project directory unless
    the directory was chosen (``--directory``)."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        hint = (
            " (a target after --config? targets go before it)"
            if any("/" in k or "." in k for k in unknown)
            else ""
        )
        raise LensLabError(
            f"unknown --config key(s) {unknown}{hint}",
            fix=f"use only {list(CONFIG_KEYS)}, e.g. --config study=test; scientific settings "
            "go through Hydra overrides: --config 'overrides=[\"models.embedded.dtype=float64\"]'",
        )
    project, cwd = project.resolve(), cwd.resolve()
    if project != cwd and not chosen_dir:
        raise LensLabError(
            f"snakemake runs in {cwd}, not in the project directory {project}: every result "
            "would be planned under the wrong directory",
            fix=f"cd {project} and run snakemake there (or pass --directory {project})",
        )


def overrides_list(value: Any) -> list[str]:
    """The Hydra overrides of ``--config overrides=...``: a list, or one override as a string
    (Snakemake passes ``overrides=a.b=1`` as a string; a string is never split into letters)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    raise LensLabError(
        f"overrides={value!r} is neither a list nor one override",
        fix="--config 'overrides=[\"models.embedded.dtype=float64\"]'",
    )


def is_dry_run(argv: list[str]) -> bool:
    """Whether the command line asks for a dry run (``-n``, ``-np``, ``--dry-run``): Snakemake
    has not set up its executor yet when the rule files are read, so the flag is read here."""
    short = [a for a in argv if a.startswith("-") and not a.startswith("--")]
    return any(a in ("--dry-run", "--dryrun", "--just-plan") for a in argv) or any(
        "n" in a[1:] and a[1:].isalpha() for a in short
    )
