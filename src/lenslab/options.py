"""Figure options of the readout views (``study.figures.<id>.options``), validated: the
patchscope views (F11 token identity, F12 entity resolution), the attribute lens (F9) and the
look-ahead beams (F16c).

Torch-free: the figure jobs read these without loading a model; the modules that run the
experiments (:mod:`lenslab.patchscopes.config`, :mod:`lenslab.relations`,
:mod:`lenslab.lookahead`) import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from lenslab.errors import LensLabError


def parse_options(cls: type, options: Any) -> Any:
    """``cls(**options)``; an unknown key is an error naming the valid ones."""
    options = dict(options or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise LensLabError(
            f"unknown figure option(s) {unknown} for {cls.__name__}",
            fix=f"use only {sorted(known)}",
        )
    return cls(**options)


# The paper's token-identity target; the embedded world's studies set their own in its words.
PAPER_IDENTITY_TARGET = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
PAPER_ENTITY_TARGET = (
    "Syria: Country in the Middle East, Leonardo DiCaprio: American actor, Samsung: South Korean "
    "multinational major appliance and consumer electronics corporation, x"
)


@dataclass(frozen=True)
class IdentityOptions:
    """F11: token identity. ``lenses`` None: the study's lenses (``lens.lenses``)."""

    target: str = PAPER_IDENTITY_TARGET
    target_position: int = -1
    cross_layer: bool = True  # also every l != l* pair (the cross-layer panel)
    lenses: list[str] | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class EntityOptions:
    """F12: entity resolution by greedy generation."""

    target: str = PAPER_ENTITY_TARGET
    target_position: int = -1
    max_new_tokens: int = 8
    batch_size: int = 64


@dataclass(frozen=True)
class AttributeOptions:
    """``study.figures.F9.options``: LRE prompts per relation, beta per relation (default 1),
    the text and relation of the attribute-lens view."""

    n_train: int = 5
    beta: dict[str, float] = field(default_factory=dict)
    view_text: str | None = None  # default: the first evaluation prompt of view_relation
    view_relation: str | None = None  # default: the first relation of the set


@dataclass(frozen=True)
class BeamOptions:
    """``study.figures.F16c.options``: which prompt and positions, beam width and depth. The
    logit lens only (see F16b: the tuned lens is trained onto the output and hides look-ahead)."""

    prompt: str | None = None  # prompt id (default: the first of the set)
    positions: list[int] = field(default_factory=lambda: [-4, -3, -2, -1])
    width: int = 5
    depth: int = 3


@dataclass(frozen=True)
class AtpFigureOptions:
    """``study.figures.F13c.options``: the prompt of the head x position maps (default: the
    one whose largest exact head effect is largest) and the estimate they show beside exact."""

    prompt: str | None = None
    method: str = "atp"  # atp (signed, same scale as exact) | atp_star (magnitude)

    def __post_init__(self) -> None:
        if self.method not in ("atp", "atp_star"):
            raise LensLabError(
                f"F13c option method={self.method!r} is unknown", fix="use atp or atp_star"
            )
