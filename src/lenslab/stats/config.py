"""The ``lens:`` settings block (conf/lens/default.yaml), validated without importing torch so
that the Snakemake rule files can check it when the DAG is built."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from lenslab.errors import LensLabError

LENS_NAMES = ("logit", "logit_noaffine", "tuned", "jacobian")
COMPILE_MODES = ("auto", "on", "off")
CI_METHODS = ("normal", "bootstrap")


@dataclass(frozen=True)
class LensConfig:
    """Which lenses to apply, how to stream them, how to aggregate, default figure colours."""

    lenses: list[str] = field(default_factory=lambda: ["logit"])
    topk: int = 5
    chunk_layers: int = 4  # residual states decoded together
    chunk_positions: int = 512  # positions decoded together
    clip_probs: bool = False  # clip probabilities at 1/(10V) inside KL terms (the original)
    compile: str = "auto"  # fuse the vocabulary reductions with torch.compile: auto | on | off
    layers: list[int] | None = None  # residual states to compute (None: all, 0..L)
    kl_cap: float | None = None  # KL colour cap in nats (None: 95th pct of the shown cells)
    rank_cap: int = 1000  # rank colours saturate here (never above the vocabulary size)
    ci: str = "normal"  # confidence intervals of per-layer means: normal | bootstrap
    n_boot: int = 1000
    seed: int = 0  # bootstrap seed

    def __post_init__(self) -> None:
        for key in ("topk", "chunk_layers", "chunk_positions", "rank_cap", "n_boot"):
            if int(getattr(self, key)) < 1:
                raise LensLabError(f"lens.{key}={getattr(self, key)} must be >= 1", fix="raise it")
        if self.compile not in COMPILE_MODES:
            raise LensLabError(
                f"lens.compile={self.compile!r} is unknown", fix=f"use one of {COMPILE_MODES}"
            )
        if self.ci not in CI_METHODS:
            raise LensLabError(f"lens.ci={self.ci!r} is unknown", fix=f"use one of {CI_METHODS}")
        if not self.lenses:
            raise LensLabError("lens.lenses is empty", fix="name at least one lens, e.g. [logit]")
        bad = [name for name in self.lenses if name not in LENS_NAMES]
        if bad:
            raise LensLabError(f"unknown lens(es) {bad}", fix=f"use some of {list(LENS_NAMES)}")
        if self.kl_cap is not None and self.kl_cap <= 0:
            raise LensLabError(f"lens.kl_cap={self.kl_cap} must be > 0", fix="or null (auto)")

    @property
    def clip_text(self) -> str:
        if self.clip_probs:
            return "probabilities clipped at 1/(10V) inside the KL terms (as the original code)"
        return "no probability clipping"


def parse_lens_config(block: Any) -> LensConfig:
    """Validate the ``lens:`` config block; an unknown key names the valid ones."""
    block = dict(block or {})
    names = [f.name for f in fields(LensConfig)]
    unknown = sorted(set(block) - set(names))
    if unknown:
        raise LensLabError(f"unknown lens setting(s) {unknown}", fix=f"use only {names}")
    if block.get("lenses") is not None:
        block["lenses"] = [str(x) for x in block["lenses"]]
    if block.get("layers") is not None:
        block["layers"] = [int(x) for x in block["layers"]]
    return LensConfig(**block)
