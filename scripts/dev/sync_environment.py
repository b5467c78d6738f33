"""Write environment.yml's pip list from requirements.lock (run by `make lock`).

The lock (pip-compile, with hashes) is the source of truth; environment.yml pins the same
versions for conda users, without hashes (conda's pip section cannot mix hashed pins with the
editable install of lenslab itself). tests/unit/test_environment.py checks the two agree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)")

HEADER = """\
# Conda environment for lenslab: the exact versions of requirements.lock (generated from it by
# `make lock`; tests/unit/test_environment.py checks that they agree). Torch is the CPU build.
name: lenslab
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def lock_pins(text: str) -> list[str]:
    """``name==version`` of every package in a pip-compile lock, in file order."""
    return [f"{m[1]}=={m[2]}" for line in text.splitlines() if (m := PIN.match(line))]


def main() -> None:
    pins = lock_pins((REPO / "requirements.lock").read_text())
    if not pins:
        sys.exit("requirements.lock has no pins. Fix: run `make lock`")
    body = "".join(f"      - {p}\n" for p in pins) + "      - -e .\n"
    (REPO / "environment.yml").write_text(HEADER + body)
    print(f"environment.yml: {len(pins)} pins from requirements.lock")


if __name__ == "__main__":
    main()
