"""Settings of the J-lens stage (``jacobian_lens:``, conf/jacobian_lens/default.yaml).

Torch-free, so the rule file validates the block when the DAG is built. The text settings are
the tuned lens's (:class:`~lenslab.lenses.tuned_config.TextSettings` fields): the same held-out
documents, the same train/evaluation split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from lenslab.errors import LensLabError

SOURCES = ("auto", "embedded", "file")


@dataclass(frozen=True)
class JFitSettings:
    n_prompts: int = 128
    seq_len: int = 64
    skip_first: int = 16
    skip_last: bool = True
    dim_batch: int = 8
    fit_embeddings: bool = True
    checkpoint_every: int = 25
    threads: int = 1


@dataclass(frozen=True)
class JTextSettings:
    source: str = "auto"
    path: str | None = None
    field: str = "text"
    lines: int = 4000
    eval_fraction: float = 0.2


@dataclass(frozen=True)
class JEvalSettings:
    max_windows: int = 256
    micro_batch: int = 32
    ci: float = 0.95
    bootstrap: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class JacobianLensSettings:
    fit: JFitSettings = field(default_factory=JFitSettings)
    text: JTextSettings = field(default_factory=JTextSettings)
    eval: JEvalSettings = field(default_factory=JEvalSettings)


def _ok(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return kind == "bool"
    return (
        (kind == "int" and isinstance(value, int))
        or (kind == "float" and isinstance(value, int | float))
        or (kind == "str" and isinstance(value, str))
        or (kind == "str | None" and (value is None or isinstance(value, str)))
    )


def _section(cls: type, values: Mapping[str, Any] | None, name: str) -> Any:
    values = dict(values or {})
    types = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise LensLabError(
            f"unknown jacobian_lens.{name} setting(s) {unknown}",
            fix=f"use only {sorted(types)} (see conf/jacobian_lens/default.yaml)",
        )
    for key, value in values.items():
        if not _ok(str(types[key]), value):
            raise LensLabError(
                f"jacobian_lens.{name}.{key}={value!r} is not a {types[key]}",
                fix=f"give a {types[key]}",
            )
    return cls(**{k: float(v) if types[k] == "float" else v for k, v in values.items()})


def parse_jacobian_settings(block: Mapping[str, Any] | None) -> JacobianLensSettings:
    """Validate the ``jacobian_lens:`` block (missing keys take the defaults)."""
    block = dict(block or {})
    unknown = sorted(set(block) - {"fit", "text", "eval"})
    if unknown:
        raise LensLabError(
            f"unknown jacobian_lens section(s) {unknown}", fix="use fit, text and eval"
        )
    s = JacobianLensSettings(
        fit=_section(JFitSettings, block.get("fit"), "fit"),
        text=_section(JTextSettings, block.get("text"), "text"),
        eval=_section(JEvalSettings, block.get("eval"), "eval"),
    )
    f = s.fit
    checks = [
        (f.n_prompts >= 1, "fit.n_prompts >= 1"),
        (f.skip_first >= 0 and f.dim_batch >= 1, "fit.skip_first >= 0, fit.dim_batch >= 1"),
        (
            f.seq_len > f.skip_first + int(f.skip_last),
            "fit.seq_len > fit.skip_first + skip_last (a window needs a valid position)",
        ),
        (f.checkpoint_every >= 0 and f.threads >= 1, "fit.checkpoint_every >= 0, threads >= 1"),
        (s.text.source in SOURCES, f"text.source in {SOURCES}"),
        (0 < s.text.eval_fraction < 1 and s.text.lines >= 2, "0 < text.eval_fraction < 1"),
        (0 < s.eval.ci < 1 and s.eval.bootstrap >= 0, "0 < eval.ci < 1, eval.bootstrap >= 0"),
        (s.eval.max_windows >= 1 and s.eval.micro_batch >= 1, "eval windows/batch >= 1"),
    ]
    for ok, rule in checks:
        if not ok:
            raise LensLabError(f"invalid jacobian_lens settings: need {rule}", fix="correct it")
    return s
