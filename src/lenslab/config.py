"""Study configuration: Hydra composes ``conf/``, dataclass schemas validate it.

Snakemake owns paths and the DAG; this module owns values. ``load_config`` is the only entry
point: it composes ``conf/config.yaml`` with a study and Hydra overrides through Hydra's compose
API, then merges the result into the schemas below so that a typo fails with the field's name.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lenslab.errors import LensLabError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
DTYPES = ("float32", "float16", "bfloat16", "float64")
ALIGN_RULES = ("strict", "left", "right")


@dataclass
class GGUFConfig:
    """A GGUF file as a model source (lenslab.models.gguf). Which fields are set picks where
    it comes from: ``distribution`` -> a file inside a pinned PyPI wheel; ``repo`` -> a file on
    the hub; neither -> ``file`` is a local path."""

    file: str = MISSING  # local path, or the file's name inside the wheel / hub repo
    repo: str | None = None
    revision: str | None = None  # hub commit (required with repo)
    distribution: str | None = None  # PyPI distribution whose wheel holds the file
    version: str | None = None  # pinned wheel version (required with distribution)
    # sha256 of the wheel (wheel source; required) or of the .gguf file (local/hub; optional)
    sha256: str | None = None


@dataclass
class ModelConfig:
    name: str = MISSING
    # "embedded": trained by the pipeline; "gguf": converted from the `gguf:` block's file by
    # the pipeline; otherwise a hub id ("gpt2") or a local directory.
    source: str = MISSING
    revision: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    device_map: str | None = None
    trust_remote_code: bool = False
    # null keeps the tokenizer's own choice of a BOS token.
    prepend_bos: bool | None = None
    batch_size: int = 8
    # Hand mapping for unlisted architectures (see lenslab.models.adapter.ArchMap).
    arch: dict[str, Any] = field(default_factory=dict)
    # Settings of the embedded model (validated by lenslab.embedded.settings).
    embedded: dict[str, Any] | None = None
    # The GGUF file of a `source: gguf` model.
    gguf: GGUFConfig | None = None
    # GPUs one job asks a cluster for (null: 1 when device is cuda, else 0); device_map: auto
    # spreads the model over them.
    gpus: int | None = None
    # Size for job resources when the model's config.json cannot be read offline: n_params,
    # n_layer, d_model, vocab, n_positions (see lenslab.resources).
    shape: dict[str, int] = field(default_factory=dict)


@dataclass
class PromptConfig:
    id: str = MISSING
    text: str = MISSING
    subject: str | None = None  # substring whose tokens are the subject (patching)
    answer: str | None = None  # expected next word; one token with a leading space
    targets: list[str] = field(default_factory=list)  # words whose rank/probability are tracked


@dataclass
class PairConfig:
    clean: str = MISSING
    corrupt: str = MISSING
    # strict: equal token counts required; left/right: align on the first/last token.
    align: str = "strict"


# How a prompt set treats an answer or target word of several tokens (lenslab.prompts).
MULTI_TOKEN_RULES = ("first", "drop", "error")


@dataclass
class PromptSetConfig:
    name: str = MISSING
    source: str = ""
    note: str | None = None
    prompts: list[PromptConfig] = field(default_factory=list)
    pairs: list[PairConfig] = field(default_factory=list)
    # Jobs the set is split into for extraction, lens statistics and patching (lenslab.shards).
    shards: int = 1
    # An answer/target word of several tokens: "first" tracks its first token (as ROME and the
    # LRE papers score objects), "drop" leaves the prompt out for that model (with a note in
    # the report), "error" refuses it (MULTI_TOKEN_RULES).
    multi_token: str = "first"


@dataclass
class FigureConfig:
    prompts: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyConfig:
    name: str = MISSING
    description: str = ""
    figures: dict[str, FigureConfig] = field(default_factory=dict)
    # Prompt sets behind the README's findings (lenslab.findings) for embedded models:
    # {patching: <set for ROME's contrast>, lens: <set for facts emerging over depth>}; empty: none.
    findings: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    study: StudyConfig = field(default_factory=StudyConfig)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    prompts: dict[str, PromptSetConfig] = field(default_factory=dict)
    # Stage settings; each stage validates its own block.
    extract: dict[str, Any] = field(default_factory=dict)
    lens: dict[str, Any] = field(default_factory=dict)
    patching: dict[str, Any] = field(default_factory=dict)
    atp: dict[str, Any] = field(default_factory=dict)
    tuned_lens: dict[str, Any] = field(default_factory=dict)
    jacobian_lens: dict[str, Any] = field(default_factory=dict)


def available(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """Option names of a config group (``model``, ``prompts``, ``study``)."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def load_config(
    study: str = "default", overrides: Sequence[str] = (), conf_dir: Path = CONF_DIR
) -> DictConfig:
    """Compose and validate a study. ``overrides`` use Hydra's syntax (``models.x.dtype=...``)."""
    if study not in available("study", conf_dir):
        raise LensLabError(
            f"unknown study {study!r}",
            fix=f"pick one of {available('study', conf_dir)} (files in {conf_dir.name}/study/)",
        )
    # Hydra only here: modules that read config values (cfg_get) do not import it.
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base=None):
            raw = compose(config_name="config", overrides=[f"study={study}", *overrides])
    except HydraException as err:
        hint = _field_hint(str(err), study, conf_dir)
        if hint is not None:
            raise hint from err
        raise LensLabError(
            f"cannot compose study {study!r}: {err}",
            fix=f"check the override; config groups: model={available('model', conf_dir)}, "
            f"prompts={available('prompts', conf_dir)}",
        ) from err
    finally:
        GlobalHydra.instance().clear()
    return validate(raw)


def _field_hint(message: str, study: str, conf_dir: Path) -> LensLabError | None:
    """A misspelt field (``models.embedded.dtyp=...``): Hydra suggests appending it with ``+``,
    which would only move the error later. Name the fields that do exist there instead."""
    found = re.search(r"Could not override '([^']+)'", message)
    if not found or "@" in found.group(1) or "." not in found.group(1):
        return None
    key = found.group(1)
    parent, _, leaf = key.rpartition(".")
    try:
        node = OmegaConf.select(load_config(study, (), conf_dir), parent)
    except LensLabError:
        return None
    if not isinstance(node, DictConfig):
        return None
    if not dataclasses.is_dataclass(OmegaConf.get_type(node)):
        # A free-form block (a stage's settings, the embedded model's): new keys are allowed.
        return LensLabError(
            f"{parent} does not set {leaf!r} (it sets {sorted(node.keys())})",
            fix=f"correct the spelling, or add the setting with +{key}=... if that block "
            "takes it (each stage checks its own keys)",
        )
    return LensLabError(
        f"{parent} has no field {leaf!r}",
        fix=f"use one of its fields {sorted(node.keys())} (the schema in lenslab/config.py)",
    )


def validate(raw: DictConfig) -> DictConfig:
    """Merge into the schema; a misspelt or mistyped field is an error that names it."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), raw)
        OmegaConf.resolve(cfg)
        _check_missing(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LensLabError(
            f"invalid config field {key!r}: {first_line}",
            fix="correct or remove that field (see the dataclasses in lenslab/config.py)",
        ) from err
    _check_values(cfg)
    return cfg


def _check_missing(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise LensLabError(f"config fields without a value: {missing}", fix="give them values")


def _check_values(cfg: DictConfig) -> None:
    for key, model in cfg.models.items():
        if "_" in key or "/" in key:
            raise LensLabError(
                f"model key {key!r} contains '_' or '/', which separate names in result paths",
                fix="use letters, digits, '-' and '.' in model keys (e.g. gpt2-xl)",
            )
        if model.dtype not in DTYPES:
            raise LensLabError(
                f"models.{key}.dtype={model.dtype!r} is not a dtype", fix=f"use one of {DTYPES}"
            )
        if model.source == "embedded" and model.embedded is None:
            raise LensLabError(
                f"models.{key} has source 'embedded' but no `embedded:` settings",
                fix="add the embedded block (see conf/model/embedded.yaml)",
            )
        if model.source == "gguf":
            check_gguf_block(key, model.gguf)
    for key, pset in cfg.prompts.items():
        if pset.multi_token not in MULTI_TOKEN_RULES:
            raise LensLabError(
                f"prompts.{key}.multi_token={pset.multi_token!r}",
                fix=f"use one of {MULTI_TOKEN_RULES}",
            )
        ids = [p.id for p in pset.prompts]
        if len(set(ids)) != len(ids):
            raise LensLabError(f"prompts.{key} repeats a prompt id", fix="make ids unique")
        for pair in pset.pairs:
            for side in (pair.clean, pair.corrupt):
                if side not in ids:
                    raise LensLabError(
                        f"prompts.{key}: pair names unknown prompt id {side!r}",
                        fix=f"use one of {ids}",
                    )
            if pair.align not in ALIGN_RULES:
                raise LensLabError(
                    f"prompts.{key}: align={pair.align!r}", fix=f"use one of {ALIGN_RULES}"
                )
    for fid, fig in cfg.study.figures.items():
        for name in fig.prompts:
            if name not in cfg.prompts:
                raise LensLabError(
                    f"study figure {fid} uses prompt set {name!r}, which the study does not load",
                    fix=f"add `- /prompts@prompts.{name}: {name}` to the study's defaults "
                    f"(loaded: {sorted(cfg.prompts)})",
                )


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` for a dict or config node, ``cfg.key`` for an object; ``default`` if absent."""
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_gguf_block(model: str, block: Any) -> None:
    """A `source: gguf` model's block names one file, pinned where it comes from elsewhere."""
    where = f"models.{model}.gguf"
    if block is None:
        raise LensLabError(
            f"models.{model} has source 'gguf' but no `gguf:` block",
            fix="add `gguf: {file: <path or name>, ...}` (see conf/model/smollm2-135m.yaml)",
        )
    if not block.get("file"):
        raise LensLabError(f"{where}.file is empty", fix="name the .gguf file")
    sha = block.get("sha256")
    if sha is not None and not _SHA256.match(str(sha)):
        raise LensLabError(
            f"{where}.sha256={sha!r} is not a sha256 hex digest",
            fix="give the 64 lowercase hex digits (sha256sum <file>)",
        )
    if block.get("distribution") is not None and (block.get("version") is None or sha is None):
        raise LensLabError(
            f"{where} names distribution {block.get('distribution')!r} without a pinned "
            "version and the wheel's sha256",
            fix="add `version:` and `sha256:` (pip hash <wheel>, or PyPI's listed hash)",
        )
    if block.get("repo") is not None and block.get("revision") is None:
        raise LensLabError(
            f"{where} names hub repo {block.get('repo')!r} without a revision",
            fix="pin `revision:` to a commit hash so the same config gives the same weights",
        )


def to_plain(node: Any) -> Any:
    """A resolved config node as plain Python (dicts, lists), for params and metadata."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def canonical_json(node: Any) -> str:
    """Stable text of a config slice: same values, same bytes (sorted keys)."""
    return json.dumps(to_plain(node), sort_keys=True, separators=(",", ":"))
