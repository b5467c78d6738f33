"""The ``patching:`` config block (conf/patching/default.yaml), validated.

Every key can be overridden for one prompt set under ``prompt_sets: {<name>: {...}}``, e.g.
``prompt_sets: {capital_facts: {mode: noise}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from lenslab.errors import LensLabError

# The names a config may use. They live here, torch-free, because Snakemake validates studies
# (and plans shards) in its own process, which should not pay for importing torch.
MODES = ("auto", "pairs", "noise")  # how clean prompts are corrupted
KINDS = ("resid", "attn", "mlp")  # which state a patch restores (the F13 sweep's kinds)
# Every kind a Patch may restore: ``head`` is one attention head's output (its slice of the
# attention output projection's input), swept by attribution patching (F13c), not by F13.
PATCH_KINDS = (*KINDS, "head")
RUNNERS = ("auto", "suffix", "full")  # how patched runs are computed


def resolve_mode(mode: str, prompt_set: Any) -> str:
    """``auto``: pairs when the prompt set has pairs, else noise."""
    if mode not in MODES:
        raise LensLabError(f"patching mode {mode!r} is unknown", fix=f"use one of {MODES}")
    if mode == "auto":
        has_get = hasattr(prompt_set, "get")
        pairs = prompt_set.get("pairs") if has_get else getattr(prompt_set, "pairs", None)
        return "pairs" if pairs else "noise"
    return mode


@dataclass(frozen=True)
class PatchingConfig:
    mode: str = "auto"  # pairs | noise | auto (pairs when the prompt set has pairs)
    kinds: tuple[str, ...] = KINDS
    # attn/MLP patches restore a window of this many layers around each layer and, as well,
    # the single layer (window 1); the residual stream is always one layer. "auto" scales
    # ROME's 10 of GPT-2 XL's 48 layers to the model's depth (2 of 12, 1 of 6); a number is
    # clamped to the model's depth (a window as deep as the model says nothing per layer).
    window: int | str = "auto"
    noise_samples: int = 10
    noise_scale: float = 3.0  # x std of the input embedding matrix
    noise_seed: int = 0
    batch_size: int = 64  # patched runs per forward batch (bounds memory)
    runner: str = "auto"  # auto | suffix | full
    prompt_sets: dict[str, Any] = field(default_factory=dict)

    def window_for(self, n_layers: int) -> int:
        """The window in layers for a model of ``n_layers`` blocks."""
        if self.window == "auto":
            return max(1, int(ROME_WINDOW * n_layers / ROME_LAYERS + 0.5))
        return min(int(self.window), n_layers)

    def windows(self, n_layers: int) -> tuple[int, ...]:
        return tuple(sorted({1, self.window_for(n_layers)}))


ROME_WINDOW, ROME_LAYERS = 10, 48  # Meng et al. 2022 restore 10 of GPT-2 XL's 48 layers


KEYS = [f.name for f in fields(PatchingConfig)]


def _checked(block: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(block) - set(KEYS))
    if unknown:
        raise LensLabError(
            f"unknown patching setting(s) {unknown} in {where}",
            fix=f"use only {KEYS} (see conf/patching/default.yaml)",
        )
    return dict(block)


def parse_config(block: dict[str, Any] | None, prompt_set: str | None = None) -> PatchingConfig:
    """The settings for ``prompt_set``: the block, updated by its ``prompt_sets`` entry."""
    values = _checked(dict(block or {}), "patching")
    per_set = values.get("prompt_sets") or {}
    if prompt_set is not None and prompt_set in per_set:
        extra = _checked(dict(per_set[prompt_set]), f"patching.prompt_sets.{prompt_set}")
        extra.pop("prompt_sets", None)
        values.update(extra)
    if "kinds" in values:
        values["kinds"] = tuple(
            [values["kinds"]] if isinstance(values["kinds"], str) else values["kinds"]
        )
    for key, kind in _NUMBERS.items():
        if key in values and not (key == "window" and values[key] == "auto"):
            values[key] = _number(key, values[key], kind)
    cfg = PatchingConfig(**values)
    _validate(cfg)
    return cfg


_NUMBERS = {
    "window": int,
    "noise_samples": int,
    "noise_seed": int,
    "batch_size": int,
    "noise_scale": float,
}


def _number(key: str, value: Any, kind: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or kind(value) != value:
        raise LensLabError(
            f"patching.{key}={value!r} is not {'an integer' if kind is int else 'a number'}",
            fix=f"set {key} to a number, e.g. {getattr(PatchingConfig, key)!r}",
        )
    return kind(value)


def _validate(cfg: PatchingConfig) -> None:
    bad_kinds = [k for k in cfg.kinds if k not in KINDS]
    if bad_kinds or not cfg.kinds:
        raise LensLabError(
            f"patching.kinds={list(cfg.kinds)} names no or unknown state kinds {bad_kinds}",
            fix=f"choose from {list(KINDS)}",
        )
    checks = [
        (cfg.mode in MODES, f"mode={cfg.mode!r}", f"use one of {MODES}"),
        (cfg.runner in RUNNERS, f"runner={cfg.runner!r}", f"use one of {RUNNERS}"),
        (
            cfg.window == "auto" or cfg.window >= 1,
            f"window={cfg.window!r}",
            'use "auto" or a window of at least 1 layer',
        ),
        (cfg.batch_size >= 1, f"batch_size={cfg.batch_size}", "use a batch size >= 1"),
        (cfg.noise_samples >= 1, f"noise_samples={cfg.noise_samples}", "use >= 1 sample"),
        (cfg.noise_scale > 0, f"noise_scale={cfg.noise_scale}", "use a positive scale"),
    ]
    for ok, what, fix in checks:
        if not ok:
            raise LensLabError(f"invalid patching setting {what}", fix=fix)


# -- attribution patching (F13c): the ``atp:`` block (conf/atp/default.yaml) ------------------
ATP_KINDS = ("head", "mlp", "resid")


@dataclass(frozen=True)
class AtpConfig:
    kinds: tuple[str, ...] = ATP_KINDS
    graddrop: bool = True  # AtP*: one more backward pass per block (Kramar et al. 2024)
    batch_size: int = 8  # corrupted runs per forward + backward (bounds memory)
    # Verification by exact patching in the same run, per prompt and kind: the top-k nodes by
    # |AtP| and by |AtP*|, plus a seeded random sample of the rest. When a prompt has at most
    # verify_all nodes, every node is patched exactly (correlations and recall then cover all).
    verify_top_k: int = 10
    verify_random: int = 20
    verify_all: int = 2000
    verify_seed: int = 0
    n_misses: int = 5  # largest false negatives named per kind and method


ATP_KEYS = [f.name for f in fields(AtpConfig)]


def parse_atp_config(block: dict[str, Any] | None) -> AtpConfig:
    """The ``atp:`` block, validated."""
    values = dict(block or {})
    unknown = sorted(set(values) - set(ATP_KEYS))
    if unknown:
        raise LensLabError(
            f"unknown atp setting(s) {unknown}",
            fix=f"use only {ATP_KEYS} (see conf/atp/default.yaml)",
        )
    if "kinds" in values:
        kinds = values["kinds"]
        values["kinds"] = tuple([kinds] if isinstance(kinds, str) else kinds)
    for key in ("batch_size", "verify_top_k", "verify_random", "verify_all", "verify_seed"):
        if key in values:
            values[key] = _atp_int(key, values[key])
    if "n_misses" in values:
        values["n_misses"] = _atp_int("n_misses", values["n_misses"])
    if not isinstance(values.get("graddrop", True), bool):
        raise LensLabError(
            f"atp.graddrop={values['graddrop']!r} is not true/false", fix="set true or false"
        )
    cfg = AtpConfig(**values)
    bad = [k for k in cfg.kinds if k not in ATP_KINDS]
    checks = [
        (bool(cfg.kinds) and not bad, f"kinds={list(cfg.kinds)}", f"choose from {ATP_KINDS}"),
        (cfg.batch_size >= 1, f"batch_size={cfg.batch_size}", "use a batch size >= 1"),
        (cfg.verify_top_k >= 1, f"verify_top_k={cfg.verify_top_k}", "verify at least 1"),
        (cfg.verify_random >= 0, f"verify_random={cfg.verify_random}", "use >= 0"),
        (cfg.verify_all >= 0, f"verify_all={cfg.verify_all}", "use >= 0 (0: never all)"),
        (cfg.n_misses >= 0, f"n_misses={cfg.n_misses}", "use >= 0"),
    ]
    for ok, what, fix in checks:
        if not ok:
            raise LensLabError(f"invalid atp setting {what}", fix=fix)
    return cfg


def _atp_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LensLabError(
            f"atp.{key}={value!r} is not an integer",
            fix=f"set {key} to an integer, e.g. {getattr(AtpConfig, key)!r}",
        )
    return value
