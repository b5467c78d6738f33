"""Lenses by name, so configs and rules can say ``lenses: [logit, tuned]``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lenslab.errors import LensLabError
from lenslab.stats.config import LENS_NAMES

if TYPE_CHECKING:  # the lenses need torch; figure jobs import this module for lens_caption only
    from lenslab.lenses.base import Lens
    from lenslab.models.adapter import ModelAdapter

__all__ = ["LENS_NAMES", "build_lens", "lens_caption"]
# Caption text per lens name, for figures drawn from tables (no model at hand).
CAPTIONS = {
    "logit": "logit lens, decoded with the full final norm (with its affine)",
    "logit_noaffine": "logit lens, decoded with the final norm's normalisation only (no affine, "
    "as the 2020 post)",
    "tuned": "tuned lens (a learned affine translator per layer, then the full final norm and "
    "unembedding)",
    "jacobian": "Jacobian lens (J-lens, Gurnee et al. 2026: W_U norm(J_l h_l), J_l the mean "
    "Jacobian of the last block's output with respect to resid[l], fitted without training; "
    "resid[0] fitted too by lenslab, read as the logit lens when an artifact lacks it)",
}


def lens_caption(name: str) -> str:
    """One line for captions describing the lens called ``name``."""
    if name.startswith("attribute."):
        return f"attribute lens of relation {name[10:]} (an LRE per layer, Hernandez et al. 2024)"
    return CAPTIONS.get(name, f"{name} lens")


def build_lens(name: str, adapter: ModelAdapter, lens_dir: str | Path | None = None) -> Lens:
    """The lens called ``name`` on ``adapter``; trained lenses are read from ``lens_dir``."""
    from lenslab.lenses.logit import LogitLens

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
    if name == "jacobian":
        if lens_dir is None:
            raise LensLabError(
                "the J-lens needs its fitted matrices",
                fix="pass lens_dir (the directory with lens.pt, e.g. results/jacobian_lens/<model>)",
            )
        from lenslab.lenses.jacobian import ARTIFACT_FILE, JacobianLens  # lazy, like tuned

        return JacobianLens.load(Path(lens_dir) / ARTIFACT_FILE, adapter)
    if name.startswith("attribute."):
        if lens_dir is None:
            raise LensLabError(
                f"the {name} lens needs its estimated LREs",
                fix="pass lens_dir (the directory with lre.safetensors, e.g. "
                "results/attribute/<model>/<prompts>)",
            )
        from lenslab.lenses.attribute import load_attribute_lens  # lazy, like the tuned lens

        return load_attribute_lens(Path(lens_dir) / "lre.safetensors", adapter, name[10:])
    raise LensLabError(
        f"unknown lens {name!r}",
        fix=f"use one of {list(LENS_NAMES)} or attribute.<relation>",
    )
