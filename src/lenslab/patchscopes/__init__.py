"""Patchscopes (Ghandeharioun et al. 2024): read a hidden state by patching it into another
prompt (and possibly another layer or model) and letting the model decode it."""

from lenslab.patchscopes.affine import AffineMap, fit_affine, fit_cross_model, split_fit
from lenslab.patchscopes.core import patched_generate, patched_logits, source_run, write_resid
from lenslab.patchscopes.experiments import (
    SourcePrompt,
    entity_resolution,
    layer_pairs,
    precision_by_layer,
    token_identity,
)

__all__ = [
    "AffineMap",
    "SourcePrompt",
    "entity_resolution",
    "fit_affine",
    "fit_cross_model",
    "layer_pairs",
    "patched_generate",
    "patched_logits",
    "precision_by_layer",
    "source_run",
    "split_fit",
    "token_identity",
    "write_resid",
]
