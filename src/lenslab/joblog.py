"""A pipeline job's output goes to its rule's log file; a failure names that log.

Every script calls :func:`start_log` first. From then on everything the job prints (stdout,
stderr, progress bars, warnings of C libraries) lands in ``snakemake.log[0]``. An uncaught error
writes its traceback to the log and a short summary to the terminal that names the log, so the
user reads the problem at once and knows where the rest is.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from lenslab.errors import LensLabError


def _summary(err: BaseException, log: str) -> str:
    what = str(err) if isinstance(err, LensLabError) else f"{type(err).__name__}: {err}"
    return f"lenslab job failed: {what}\n  Full output and traceback: {log}\n"


def start_log(smk: Any) -> str | None:
    """Send this process's output to the job's log (``smk.log[0]``); returns its path.

    File descriptors 1 and 2 are redirected too, so output written below Python (torch, tqdm's
    raw writes, subprocesses) is kept. A job without a log keeps the terminal."""
    logs = list(getattr(smk, "log", []) or [])
    if not logs:
        return None
    log = str(logs[0])
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    sys.excepthook = _hook(log, terminal)
    return log


def _hook(log: str, terminal: TextIO):
    def hook(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
        traceback.print_exception(kind, err, tb, file=sys.stderr)
        sys.stderr.flush()
        terminal.write(_summary(err, log))
        terminal.flush()

    return hook
