"""Lenses by name, so configs and rules can say ``lenses: [logit, tuned]``."""

from __future__ import annotations

from pathlib import Path

from lenslab.errors import LensLabError
from lenslab.lenses.base import Lens
from lenslab.lenses.logit import LogitLens
from lenslab.models.adapter import ModelAdapter

LENS_NAMES = ("logit", "logit_noaffine", "tuned")


def build_lens(name: str, adapter: ModelAdapter, lens_dir: str | Path | None = None) -> Lens:
    """The lens called ``name`` on ``adapter``; trained lenses are read from ``lens_dir``."""
    if name == "logit":
        return LogitLens(adapter, affine=True)
    if name == "logit_noaffine":
        return LogitLens(adapter, affine=False)
    if name == "tuned":
        if lens_dir is None:
            raise LensLabError(
                "the tuned lens needs its trained parameters",
                fix="pass lens_dir (the directory with params.pt, e.g. results/tuned_lens/<model>)",
            )
        from lenslab.lenses.tuned import TunedLens  # lazy: only tuned-lens runs import it

        return TunedLens.load(lens_dir, adapter)
    raise LensLabError(f"unknown lens {name!r}", fix=f"use one of {list(LENS_NAMES)}")
