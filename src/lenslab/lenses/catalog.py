"""Every lens lenslab knows, by name: its caption and the fitted file it reads. Torch-free, so
config validation, rule files and figure jobs use it without loading a model.

A fitted lens (tuned, attribute) names the result file that holds its parameters, relative to
the study's results directory, with ``{model}`` (and for the attribute lens ``{prompts}``)
placeholders; the rule files ask for that file as the job's ``fitted`` input, so a new lens
needs an entry here and a builder in :mod:`lenslab.lenses.registry`, and no rule edits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lenslab.errors import LensLabError


@dataclass(frozen=True)
class LensSpec:
    name: str
    caption: str
    fitted: str | None = None  # result file of the fitted parameters (None: nothing to fit)


LENSES: dict[str, LensSpec] = {
    spec.name: spec
    for spec in (
        LensSpec("logit", "logit lens, decoded with the full final norm (with its affine)"),
        LensSpec(
            "logit_noaffine",
            "logit lens, decoded with the final norm's normalisation only (no affine, as the "
            "2020 post)",
        ),
        LensSpec(
            "tuned",
            "tuned lens (a learned affine translator per layer, then the full final norm and "
            "unembedding)",
            fitted="tuned_lens/{model}/params.pt",
        ),
        LensSpec(
            "jacobian",
            "Jacobian lens (J-lens, Gurnee et al. 2026: W_U norm(J_l h_l), J_l the mean Jacobian "
            "of the last block's output with respect to resid[l], fitted without training; "
            "resid[0] fitted too by lenslab, read as the logit lens when an artifact lacks it)",
            fitted="jacobian_lens/{model}/lens.pt",
        ),
    )
}
LENS_NAMES = tuple(LENSES)
ATTRIBUTE_PREFIX = "attribute."  # attribute.<relation>: an LRE lens fitted by the F9 stage


def lens_spec(name: str) -> LensSpec:
    """The catalogue entry of ``name``; an unknown lens is an error listing the known ones."""
    if name.startswith(ATTRIBUTE_PREFIX):
        relation = name[len(ATTRIBUTE_PREFIX) :]
        return LensSpec(
            name,
            f"attribute lens of relation {relation} (an LRE per layer, Hernandez et al. 2024)",
            fitted="attribute/{model}/{prompts}/lre.safetensors",
        )
    if name not in LENSES:
        raise LensLabError(
            f"unknown lens {name!r}", fix=f"use one of {list(LENS_NAMES)} or attribute.<relation>"
        )
    return LENSES[name]


def lens_caption(name: str) -> str:
    """One line for captions describing the lens called ``name``."""
    return lens_spec(name).caption


def fitted_file(name: str, model: str) -> str | None:
    """The result file (relative to results/<study>/) a lens reads, or None for the logit lens."""
    fitted = lens_spec(name).fitted
    return fitted.format(model=model, prompts="{prompts}") if fitted else None


def fitted_key(name: str) -> str:
    """The name of a job's input holding the fitted file of lens ``name``."""
    return "fitted_" + name.replace(".", "_")


def fitted_dir(inputs: object, name: str) -> str | None:
    """The directory of lens ``name``'s fitted file among a job's named ``inputs`` (None when the
    lens has nothing fitted): the ``lens_dir`` that :func:`lenslab.lenses.registry.build_lens`
    takes."""
    path = getattr(inputs, fitted_key(name), None)
    return str(Path(path).parent) if path else None
