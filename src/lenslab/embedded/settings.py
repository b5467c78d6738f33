"""Settings of the embedded model: world size, architecture, training budget, evaluation.

``parse_settings`` turns the ``embedded:`` block of a model config into an
:class:`EmbeddedSettings`; unknown keys and wrong types are errors that name the valid keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lenslab.embedded import world

# Relative weights of the document kinds in the training corpus.
MIX_KEYS = (
    "facts",
    "two_hop",
    "copy",
    "repeat",
    "descriptions",
    "tables",
    "fewshot",
    "translation",
    "concepts",
)


@dataclass(frozen=True)
class EmbeddedSettings:
    seed: int = 0
    # -- world ---------------------------------------------------------------------------
    n_countries: int = len(world.COUNTRIES)  # first n of world.COUNTRIES (France, Germany first)
    n_two_hop_heldout: int = 4  # countries whose two-hop facts are never trained
    max_paragraph: int = 4  # sentences per fact paragraph (1..max)
    mix: dict[str, float] = field(
        default_factory=lambda: {
            "facts": 0.25,
            "two_hop": 0.1,
            "copy": 0.2,
            "repeat": 0.15,
            "descriptions": 0.07,
            "tables": 0.15,
            "fewshot": 0.08,
            "translation": 0.12,
            "concepts": 0.03,
        }
    )
    # -- model (GPT-2 architecture) --------------------------------------------------------
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 128
    seq_len: int = 64  # training window = n_positions
    # Std of the initial weights. GPT-2 uses 0.02; a larger value lets attention sharpen (and
    # induction heads form) within a CPU-sized budget instead of after a long plateau.
    init_std: float = 0.08
    # GPT-2's tanh-approximated GELU. PyTorch's fused kernel ("gelu_pytorch_tanh") computes the
    # same function as GPT-2's own "gelu_new" in one pass; training steps are 12% faster.
    activation: str = "gelu_pytorch_tanh"
    # Attention kernel used while training (saved models load with transformers' default).
    # At 64 tokens and 4 heads the plain "eager" path trains 9% faster than "sdpa".
    train_attention: str = "eager"
    # -- training ----------------------------------------------------------------------------
    steps: int = 2000  # total optimizer steps (both stages)
    # Stage 1 trains a shallow model of ``stage1_layers`` blocks for ``stage1_steps`` steps; it
    # is then grown to ``n_layer`` blocks (trained blocks spread out, identity blocks between)
    # and trained for the remaining steps. Shallow models form induction (copy) heads within a
    # CPU budget; a 6-block model trained from scratch does not. 0 disables the stage.
    stage1_layers: int = 2
    stage1_steps: int = 1200
    # Document mix of the shallow stage; kinds not listed get weight 0, and an empty mapping
    # means ``mix``. Copy-only practice lets the shallow model form induction heads without
    # also settling where facts are looked up (the deep model learns facts across its depth).
    stage1_mix: dict[str, float] = field(default_factory=lambda: {"copy": 0.3, "repeat": 0.7})
    # The shallow stage ends early (checked every 50 steps) once copying seen slot words is
    # this accurate; ``stage1_steps`` is then only a cap. 0: always run ``stage1_steps``.
    stage1_copy_target: float = 0.95
    # The first blocks of the grown model keep their shallow-stage weights: block 0 then stays
    # a copy-trained block (previous-token heads), and facts are looked up in later blocks.
    stage2_frozen_blocks: int = 1
    # ... and where they attend: no gradient through their queries and keys, so the deep
    # stage's embeddings cannot recruit a frozen copy head to fetch the subject to the last
    # token inside block 0 (a seed-dependent shortcut that hides ROME's early-subject effect).
    stage2_freeze_routing: bool = True
    # Redraw the seen slot words' embedding rows from the initial distribution at every step,
    # so no weight can memorise a particular slot word: copying must work for any random
    # vector, which is what a held-out word (never trained, still at its initial draw) is.
    redraw_slot_embeddings: bool = True
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_frac: float = 0.1
    weight_decay: float = 0.01  # never on embeddings, biases or norms
    grad_clip: float = 1.0
    # Update an embedding row only in steps whose batch contains that token ("lazy" embeddings),
    # so tokens never seen in training (the held-out slot words) keep their initial vectors
    # instead of drifting together under Adam.
    lazy_embeddings: bool = True
    num_threads: int = 2
    # -- evaluation --------------------------------------------------------------------------
    eval_copy_items: int = 200

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        """Short hash of the full settings (defaults included) and the world data."""
        blob = json.dumps(
            {"settings": self.to_dict(), "world": world_fingerprint()},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def world_fingerprint() -> str:
    return hashlib.sha256("\n".join(world.all_texts()).encode()).hexdigest()[:16]


_TYPES = {f.name: f.type for f in fields(EmbeddedSettings)}
# The values a text setting may take (names transformers knows).
CHOICES = {
    "activation": ("gelu_pytorch_tanh", "gelu_new", "gelu"),
    "train_attention": ("eager", "sdpa"),
}


def _coerce(key: str, value: Any, kind: str) -> Any:
    bad = ValueError(f"embedded setting {key!r} must be {kind}, got {value!r}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind == "str":
        choices = CHOICES[key]
        if value not in choices:
            raise ValueError(
                f"embedded setting {key!r} must be one of {list(choices)}, got {value!r}"
            )
        return value
    raise AssertionError(kind)


def _parse_mix(key: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"embedded setting {key!r} must be a mapping with keys {MIX_KEYS}")
    bad = sorted(set(value) - set(MIX_KEYS))
    if bad:
        raise ValueError(f"unknown {key} key(s) {bad}; valid keys: {list(MIX_KEYS)}")
    given = {k: _coerce(f"{key}.{k}", v, "float") for k, v in value.items()}
    # ``mix`` overrides the default weights; ``stage1_mix`` lists its kinds (empty: use mix).
    mix = EmbeddedSettings().mix | given if key == "mix" else given
    if mix and (any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0):
        raise ValueError(f"{key} weights must be >= 0 and not all zero, got {mix}")
    if key == "mix" and not mix:
        raise ValueError("embedded setting 'mix' must not be empty")
    return mix


def parse_settings(d: Mapping[str, Any] | None) -> EmbeddedSettings:
    """Validate a mapping (e.g. a model config's ``embedded:`` block) into settings.

    Raises ValueError naming unknown keys (with the valid ones) and values of the wrong type.
    """
    d = dict(d or {})
    valid = sorted(_TYPES)
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ValueError(f"unknown embedded setting(s) {unknown}; valid keys: {valid}")
    out: dict[str, Any] = {}
    for key, value in d.items():
        kind = _TYPES[key]
        if key in ("mix", "stage1_mix"):
            out[key] = _parse_mix(key, value)
        else:
            out[key] = _coerce(key, value, kind)
    s = EmbeddedSettings(**out)
    checks = [
        (2 <= s.n_countries <= len(world.COUNTRIES), f"n_countries in 2..{len(world.COUNTRIES)}"),
        (0 <= s.n_two_hop_heldout <= s.n_countries - 2, "0 <= n_two_hop_heldout <= n_countries-2"),
        (s.max_paragraph >= 1, "max_paragraph >= 1"),
        (s.n_layer >= 1 and s.n_head >= 1, "n_layer >= 1 and n_head >= 1"),
        (s.n_embd % s.n_head == 0, "n_embd divisible by n_head"),
        (s.seq_len >= 48, "seq_len >= 48 (the longest documents)"),
        (s.steps >= 1 and s.batch_size >= 1, "steps >= 1 and batch_size >= 1"),
        (s.lr > 0 and 0 <= s.min_lr_frac <= 1, "lr > 0 and 0 <= min_lr_frac <= 1"),
        (s.init_std > 0, "init_std > 0"),
        (0 <= s.stage1_copy_target <= 1, "0 <= stage1_copy_target <= 1"),
        (0 <= s.stage2_frozen_blocks < s.n_layer, "0 <= stage2_frozen_blocks < n_layer"),
        (0 <= s.stage1_layers <= s.n_layer, "0 <= stage1_layers <= n_layer"),
        (len(stage_plan(s)) == 1 or s.stage1_steps < s.steps, "stage1_steps < steps"),
        (s.stage1_steps >= 0, "stage1_steps >= 0"),
        (s.num_threads >= 1, "num_threads >= 1"),
        (s.eval_copy_items >= 1, "eval_copy_items >= 1"),
    ]
    for ok, rule in checks:
        if not ok:
            raise ValueError(f"invalid embedded settings: need {rule}")
    return s


def stage_plan(s: EmbeddedSettings) -> list[tuple[int, int, int]]:
    """[(n_layer, first_step, last_step_exclusive), ...]: the shallow stage, then the full model."""
    if s.stage1_layers <= 0 or s.stage1_layers >= s.n_layer or s.stage1_steps <= 0:
        return [(s.n_layer, 0, s.steps)]
    return [(s.stage1_layers, 0, s.stage1_steps), (s.n_layer, s.stage1_steps, s.steps)]
