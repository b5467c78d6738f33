"""Every figure's options (``study.figures.<id>.options``): one frozen dataclass per figure
family, holding every default. :data:`lenslab.figspec.FIGURES` names each figure's class;
:func:`parse_options` checks keys, value types and ranges, so a study's figure options are all
checked when it is composed (``lenslab.validate``), before any job runs.

Core layer, torch-free: rule files, figure jobs and the methods that run an experiment
(:mod:`lenslab.patchscopes.config`, :mod:`lenslab.relations`, :mod:`lenslab.lookahead`) read
them from here.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from lenslab.errors import LensLabError


def parse_options(cls: type, options: Any) -> Any:
    """``cls(**options)``; an unknown key, or a value of the wrong type, is an error naming the
    valid keys or the expected type."""
    options = dict(options or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        fix = f"use only {sorted(known)}" if known else "remove them: this figure takes no options"
        raise LensLabError(f"unknown figure option(s) {unknown} for {cls.__name__}", fix=fix)
    hints = typing.get_type_hints(cls)
    for key, value in options.items():
        if not _is_a(value, hints[key]):
            raise LensLabError(
                f"figure option {key}={value!r} of {cls.__name__} is not a {_type_name(hints[key])}",
                fix=f"give {key} a value of type {_type_name(hints[key])}",
            )
    return cls(**options)


def _is_a(value: Any, hint: Any) -> bool:
    """Whether ``value`` (plain YAML data) fits the annotation ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        return isinstance(value, list | tuple) and all(_is_a(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _is_a(k, args[0]) and _is_a(v, args[1]) for k, v in value.items()
        )
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _positive(cls_name: str, **values: int | None) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise LensLabError(f"{cls_name} option {key}={value} must be >= 1", fix="raise it")


@dataclass(frozen=True)
class NoOptions:
    """Figures that take no options (F8, F10, F14, F16b)."""


@dataclass(frozen=True)
class DifferenceOptions:
    """F1: which pair of the set (``clean|corrupt`` ids; default: the first)."""

    pair: str | None = None


@dataclass(frozen=True)
class ViewOptions:
    """``study.figures.<FID>.options`` of F2-F6 (all optional)."""

    prompt: str | int | None = None  # prompt id or index in the set (default: the first)
    lens: str | None = None  # which applied lens (default: the first of lens.lenses)
    layer_step: int | None = None  # every n-th state (default: 1, or 2 above 25 states)
    max_positions: int = 20  # widest position window
    positions: list[int] | None = None  # explicit positions (overrides the window)
    start: int | None = None  # first position of the window (default: the last ones)
    kl_cap: float | None = None  # colour cap of KL (nats); default: lens.kl_cap
    rank_cap: int | None = None  # colour floor of ranks; default: lens.rank_cap (<= vocab)
    percentiles: list[float] = field(default_factory=lambda: [5.0, 95.0])  # F2 logit colours
    window: int = 3  # F6: tokens either side of each occurrence of the answer
    max_token_chars: int = 8  # longer cell texts are cut with '…'

    def __post_init__(self) -> None:
        if self.layer_step is not None and self.layer_step < 1:
            raise LensLabError(f"layer_step={self.layer_step} must be >= 1", fix="use 1, 2, ...")
        if self.max_positions < 1 or self.window < 0 or self.max_token_chars < 2:
            raise LensLabError(
                "max_positions, window and max_token_chars must be positive",
                fix="e.g. max_positions: 20, window: 3, max_token_chars: 8",
            )
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise LensLabError(f"percentiles={self.percentiles}", fix="use e.g. [5, 95]")


@dataclass(frozen=True)
class F7Options:
    """F7: tuned vs logit lens trajectories on one prompt, and per-layer curves."""

    prompt: str | int | None = None  # prompt id or index (default: the first)
    colour: str = "prob"  # cell colour: prob | entropy
    unit: str = "bits_per_byte"  # cross-entropy unit: bits_per_byte | nats_per_token
    max_rows: int = 25

    def __post_init__(self) -> None:
        if self.colour not in ("prob", "entropy"):
            raise LensLabError(f"F7 colour={self.colour!r}", fix="use 'prob' or 'entropy'")
        if self.unit not in ("bits_per_byte", "nats_per_token"):
            raise LensLabError(
                f"F7 unit={self.unit!r}", fix="use 'bits_per_byte' or 'nats_per_token'"
            )
        _positive("F7", max_rows=self.max_rows)


DISTANCE_METRICS = ("kl_final", "rev_kl_final", "js_final", "mse_logits", "cos_final", "agree_top1")


@dataclass(frozen=True)
class DistanceOptions:
    """F17: which applied lenses and which distances (default: all)."""

    lenses: list[str] | None = None
    metrics: list[str] | None = None

    def __post_init__(self) -> None:
        bad = [m for m in self.metrics or [] if m not in DISTANCE_METRICS]
        if bad:
            raise LensLabError(
                f"unknown F17 metric(s) {bad}", fix=f"use some of {list(DISTANCE_METRICS)}"
            )


PATCHING_METRICS = ("prob", "logit_diff", "norm_ld")  # lenslab.patching.metrics computes them


@dataclass(frozen=True)
class PatchingViewOptions:
    """F13 / F13b: the metric shown, the window of the attention/MLP panels (default: the
    patching stage's), which prompts' heatmaps (default: the first ``max_prompts``)."""

    metric: str = "norm_ld"
    window: int | None = None
    prompt_ids: list[str] | None = None
    max_prompts: int = 2

    def __post_init__(self) -> None:
        if self.metric not in PATCHING_METRICS:
            raise LensLabError(f"F13 metric={self.metric!r}", fix=f"use one of {PATCHING_METRICS}")
        _positive("F13", window=self.window, max_prompts=self.max_prompts)


@dataclass(frozen=True)
class VisibilityOptions:
    """F15: the query cell of the blog figure (layer, position; negative counts from the end),
    the prompt (default: the first) and the scalar (sum |h / ||h|||, or sum |h| when false)."""

    layer: int = -1
    position: int = -1
    prompt: str | int | None = None
    normalise: bool = True


@dataclass(frozen=True)
class LookaheadOptions:
    """F16: how many tokens ahead the lens is scored (t+1 .. t+max_ahead)."""

    max_ahead: int = 3

    def __post_init__(self) -> None:
        _positive("F16", max_ahead=self.max_ahead)


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
    cross_layer: bool = True  # also l != l* pairs (the cross-layer panel)
    cross_layer_step: int = 1  # the cross-layer panel on every n-th state (l* = l: all)
    lenses: list[str] | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        _positive("F11", cross_layer_step=self.cross_layer_step, batch_size=self.batch_size)


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
class JacobianOptions:
    """F18: the prompt whose J-lens readout (top-1 per layer and position) is drawn, its colour
    (``prob`` or ``entropy``) and the most layer rows shown."""

    prompt: str | None = None  # prompt id (default: the first of the set)
    colour: str = "prob"
    max_rows: int = 25

    def __post_init__(self) -> None:
        if self.colour not in ("prob", "entropy"):
            raise LensLabError(f"F18 colour={self.colour!r}", fix="use 'prob' or 'entropy'")
        if int(self.max_rows) < 2:
            raise LensLabError(f"F18 max_rows={self.max_rows}", fix="use max_rows >= 2")


@dataclass(frozen=True)
class AtpFigureOptions:
    """F13c: the prompt of the head x position maps (default: the one whose largest exact head
    effect is largest) and the estimate they show beside exact."""

    prompt: str | None = None
    method: str = "atp"  # atp (signed, same scale as exact) | atp_star (magnitude)

    def __post_init__(self) -> None:
        if self.method not in ("atp", "atp_star"):
            raise LensLabError(
                f"F13c option method={self.method!r} is unknown", fix="use atp or atp_star"
            )
