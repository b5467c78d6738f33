"""Settings of the tuned-lens stage and the text it trains and evaluates on.

``parse_settings`` validates the ``tuned_lens:`` config block (conf/tuned_lens/default.yaml) into
dataclasses; an unknown key or a wrong type is a :class:`LensLabError` naming the valid keys.
``load_documents`` returns the training or the evaluation documents: for the embedded model,
held-out synthetic world text (never in its training corpus); for other models, a local text
file. The last ``eval_fraction`` of the documents is the evaluation text and is never trained on.
``make_windows`` packs documents into fixed-length token windows, as the reference code does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from lenslab.corpus import BUILT_TEXT
from lenslab.errors import LensLabError

REPO = Path(__file__).resolve().parents[3]
SOURCES = ("auto", "embedded", "file", "sampled", "wheel")
INITS = ("identity", "least_squares")
INIT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 250
    tokens_per_step: int = 2048  # the reference uses 2**18
    seq_len: int = 64
    micro_batch: int = 32  # windows per forward pass; a step accumulates over several
    lr_scale: float = 1.0  # SGD lr = lr_scale * (1 - momentum), as in tuned-lens
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-3
    warmup_steps: int = 0
    grad_clip: float = 1.0
    bias: bool = True
    seed: int = 0
    checkpoint_every: int = 25  # 0: no checkpoints
    threads: int = 2
    # Keep the training text's residual streams in memory when they fit (MB; 0: never) and
    # the run reads the text more than once: one forward pass per window instead of per epoch.
    cache_mb: int = 1024
    # Where the KL steps start: "identity" (the logit lens, as the reference does) or
    # "least_squares" (lenslab.lenses.tuned_init: a closed-form map from each layer to the
    # output over the whole training text; steps may then be 0). init_skip: positions left out
    # at the start of each window; init_ridge: ridge relative to the states' scale; init_dtype:
    # float32, or bfloat16 autocast for the fit's forward passes (twice as fast on a CPU).
    init: str = "identity"
    init_skip: int = 1
    init_ridge: float = 1e-4
    init_dtype: str = "float32"

    @property
    def windows_per_step(self) -> int:
        return max(1, self.tokens_per_step // self.seq_len)


@dataclass(frozen=True)
class TextSettings:
    source: str = "auto"  # auto: embedded for embedded models (settings known), else file
    path: str | None = None  # .txt (a document per line), .jsonl, or a prompt-set .yaml
    field: str = "text"  # the text field of .jsonl records
    lines: int = 4000  # embedded: held-out lines drawn (training + evaluation)
    # sampled / wheel (lenslab.corpus; rule corpus writes results/corpus/<model>.jsonl and
    # passes it as `path`): tokens in all, the order's seed; sampled: tokens per document;
    # wheel: the pinned wheel (distribution, version, its sha256) and a glob on its files.
    tokens: int = 60000
    doc_tokens: int = 128
    seed: int = 0
    distribution: str | None = None
    version: str | None = None
    sha256: str | None = None
    members: str = "*.py"
    eval_fraction: float = 0.2  # the last documents, kept for evaluation


@dataclass(frozen=True)
class EvalSettings:
    max_windows: int = 256
    micro_batch: int = 32
    ci: float = 0.95
    bootstrap: int = 1000
    seed: int = 0
    drift_windows: int = 32  # F8 similarity and layer-transfer matrices (0: none, no F8)


@dataclass(frozen=True)
class TunedLensSettings:
    train: TrainSettings = field(default_factory=TrainSettings)
    text: TextSettings = field(default_factory=TextSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_section(cls: type, values: Mapping[str, Any] | None, name: str) -> Any:
    values = dict(values or {})
    types = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise LensLabError(
            f"unknown tuned_lens.{name} setting(s) {unknown}",
            fix=f"use only {sorted(types)} (see conf/tuned_lens/default.yaml)",
        )
    out = {}
    for key, value in values.items():
        kind = types[key]
        ok = (
            (kind == "int" and isinstance(value, int) and not isinstance(value, bool))
            or (kind == "float" and isinstance(value, int | float) and not isinstance(value, bool))
            or (kind == "bool" and isinstance(value, bool))
            or (kind == "str" and isinstance(value, str))
            or (kind == "str | None" and (value is None or isinstance(value, str)))
        )
        if not ok:
            raise LensLabError(
                f"tuned_lens.{name}.{key}={value!r} is not a {kind}", fix=f"give a {kind}"
            )
        out[key] = float(value) if kind == "float" else value
    return cls(**out)


def parse_settings(block: Mapping[str, Any] | None) -> TunedLensSettings:
    """Validate the ``tuned_lens:`` block (missing keys take the defaults)."""
    block = dict(block or {})
    unknown = sorted(set(block) - {"train", "text", "eval"})
    if unknown:
        raise LensLabError(
            f"unknown tuned_lens section(s) {unknown}", fix="use train, text and eval"
        )
    s = TunedLensSettings(
        train=_parse_section(TrainSettings, block.get("train"), "train"),
        text=_parse_section(TextSettings, block.get("text"), "text"),
        eval=_parse_section(EvalSettings, block.get("eval"), "eval"),
    )
    t = s.train
    checks = [
        (t.init in INITS, f"train.init in {INITS}"),
        (
            t.steps >= (0 if t.init == "least_squares" else 1),
            "train.steps >= 1 (0 with least_squares)",
        ),
        (t.seq_len >= 2, "train.seq_len >= 2"),
        (t.tokens_per_step >= t.seq_len, "train.tokens_per_step >= train.seq_len"),
        (t.micro_batch >= 1, "train.micro_batch >= 1"),
        (t.lr_scale > 0 and 0 <= t.momentum < 1, "train.lr_scale > 0 and 0 <= momentum < 1"),
        (0 <= t.warmup_steps < max(t.steps, 1), "0 <= train.warmup_steps < train.steps"),
        (t.init_skip >= 0 and t.init_ridge >= 0, "train.init_skip >= 0, train.init_ridge >= 0"),
        (t.init_dtype in INIT_DTYPES, f"train.init_dtype in {list(INIT_DTYPES)}"),
        (t.checkpoint_every >= 0 and t.threads >= 1, "checkpoint_every >= 0, threads >= 1"),
        (t.cache_mb >= 0, "train.cache_mb >= 0"),
        (s.text.source in SOURCES, f"text.source in {SOURCES}"),
        (0 < s.text.eval_fraction < 1, "0 < text.eval_fraction < 1"),
        (s.text.lines >= 2, "text.lines >= 2"),
        (
            s.text.source != "wheel"
            or None not in (s.text.distribution, s.text.version, s.text.sha256),
            "text.distribution, text.version and text.sha256 (the wheel's) with source wheel",
        ),
        (0 < s.eval.ci < 1 and s.eval.bootstrap >= 0, "0 < eval.ci < 1, eval.bootstrap >= 0"),
        (s.eval.max_windows >= 1 and s.eval.micro_batch >= 1, "eval windows/batch >= 1"),
        (s.eval.drift_windows >= 0, "eval.drift_windows >= 0 (0: no drift matrices, no F8)"),
    ]
    for ok, rule in checks:
        if not ok:
            raise LensLabError(f"invalid tuned_lens settings: need {rule}", fix="correct it")
    return s


# -- text ------------------------------------------------------------------------------------
def _resolve(path: str) -> Path:
    """Relative paths: the working directory first (Snakemake's), then the repository."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return REPO / p


def _read_file(path: str, field_name: str) -> list[str]:
    p = _resolve(path)
    if not p.is_file():
        raise LensLabError(
            f"tuned-lens text file {path!r} not found", fix="set tuned_lens.text.path to a file"
        )
    if p.suffix == ".jsonl":
        docs = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                record = json.loads(line)
                if field_name not in record:
                    raise LensLabError(
                        f"{p} line {i + 1} has no field {field_name!r}",
                        fix="set tuned_lens.text.field to the text field of the records",
                    )
                docs.append(str(record[field_name]))
        return docs
    if p.suffix in (".yaml", ".yml"):  # a prompt set: its prompt texts are the documents
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        return [str(q["text"]) for q in data.get("prompts", [])]
    return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _find_embedded_settings(model_cfg: Mapping[str, Any], model_path: str | Path | None) -> Any:
    """The embedded settings of the config, else of the model dir's metrics.json, else None."""
    settings = model_cfg.get("embedded")
    if settings is None and model_path is not None:
        metrics = Path(model_path) / "metrics.json"  # written by the embedded trainer
        if metrics.is_file():
            settings = json.loads(metrics.read_text()).get("settings")
    return settings


def _embedded_settings(model_cfg: Mapping[str, Any], model_path: str | Path | None) -> Any:
    settings = _find_embedded_settings(model_cfg, model_path)
    if settings is None:
        raise LensLabError(
            f"model {model_cfg.get('name')!r}: no embedded settings for held-out text",
            fix="give the model config an `embedded:` block, or set tuned_lens.text.source=file",
        )
    return settings


def load_documents(
    text: TextSettings,
    model_cfg: Mapping[str, Any],
    split: str,
    model_path: str | Path | None = None,
) -> list[str]:
    """The training (``split="train"``) or evaluation (``"eval"``) documents."""
    if split not in ("train", "eval"):
        raise LensLabError(f"split {split!r}", fix="use 'train' or 'eval'")
    source = text.source
    if source == "auto":  # embedded models, also one loaded from a directory, use world text
        embedded = model_cfg.get("source") == "embedded"
        embedded = embedded or _find_embedded_settings(model_cfg, model_path) is not None
        source = "embedded" if embedded else "file"
    if source == "embedded":
        from lenslab.embedded.corpus import heldout_text

        docs = heldout_text(_embedded_settings(model_cfg, model_path), text.lines)
    elif text.path is None and source in BUILT_TEXT:
        raise LensLabError(
            f"model {model_cfg.get('name')!r}: {source} text has no path",
            fix="run through the pipeline (rule corpus writes it) or set text.path",
        )
    elif text.path is None:
        raise LensLabError(
            f"model {model_cfg.get('name')!r} needs text to train its tuned lens on",
            fix="set tuned_lens.text.path to a local .txt/.jsonl file or a prompt-set .yaml",
        )
    else:
        docs = _read_file(text.path, text.field)
    n_eval = max(1, round(len(docs) * text.eval_fraction))
    if len(docs) - n_eval < 1:
        raise LensLabError(
            f"only {len(docs)} documents: too few to split into training and evaluation text",
            fix="give more text (tuned_lens.text.lines or a longer file)",
        )
    return docs[:-n_eval] if split == "train" else docs[-n_eval:]


def make_windows(tokenizer: Any, docs: list[str], seq_len: int) -> Tensor:
    """``[N, seq_len]`` token ids: documents joined by EOS, cut into consecutive windows.

    As in the reference implementation: no padding, a window may start mid-document.
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for doc in docs:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"]
        if eos is not None:
            stream.append(eos)
    n = len(stream) // seq_len
    if n == 0:
        raise LensLabError(
            f"the text has {len(stream)} tokens, fewer than one window of {seq_len}",
            fix="give more text or lower tuned_lens.train.seq_len",
        )
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def check_seq_len(model: Any, seq_len: int) -> None:
    """Windows must fit the model's context (learned position tables have a hard limit)."""
    config = getattr(model, "config", None)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if limit is not None and seq_len > limit:
        raise LensLabError(
            f"tuned_lens.train.seq_len={seq_len} exceeds the model's context of {limit} tokens",
            fix=f"set tuned_lens.train.seq_len <= {limit}",
        )
