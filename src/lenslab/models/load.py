"""Load a causal LM and its tokenizer from a model config, through transformers' Auto classes.

Hub ids and local directories take the same path; the embedded model is a local directory that
the ``train_embedded`` rule wrote, so it is loaded exactly like a hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lenslab.config import cfg_get as _get
from lenslab.devices import placement
from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.models.files import check_tokenizer_files

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def load_model(cfg: Any, path: str | Path | None = None) -> ModelAdapter:
    """Load the model a config names. ``path`` overrides ``source`` (the embedded model's dir)."""
    source = str(path) if path is not None else _get(cfg, "source")
    if source == "embedded":
        raise LensLabError(
            f"model {_get(cfg, 'name')!r} is the embedded model, which has no hub id",
            fix="pass the directory the train_embedded rule wrote (results/models/<name>)",
        )
    dtype_name = _get(cfg, "dtype", "float32")
    if dtype_name not in DTYPES:
        raise LensLabError(f"dtype {dtype_name!r} is unknown", fix=f"use one of {list(DTYPES)}")
    # A GPU asked for and absent is an error here, before minutes of loading (no CPU fallback).
    place = placement(_get(cfg, "device", "cpu"), _get(cfg, "device_map") or None)
    kwargs: dict[str, Any] = {
        "revision": _get(cfg, "revision") or None,
        "trust_remote_code": bool(_get(cfg, "trust_remote_code", False)),
    }
    tokenizer = load_tokenizer(cfg, path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=DTYPES[dtype_name],
            **place,
            **kwargs,
        )
    except OSError as err:
        raise LensLabError(
            f"cannot load model {source!r}: {err}",
            fix="check the id or path; hub models need network access or a local HF cache "
            "(set HF_HOME), or point `source` at a local directory",
        ) from err
    except Exception as err:  # safetensors' own error type is not importable by a stable name
        if "safetensor" not in f"{type(err).__name__} {err}".lower() and "header" not in str(err):
            raise
        raise _corrupt_weights(source, err) from err
    if not _get(cfg, "device_map"):
        model.to(_get(cfg, "device", "cpu"))
    # Unchecked: lenslab.gate.load_model runs the fidelity gate on what this returns.
    return ModelAdapter(
        model, tokenizer, arch=dict(_get(cfg, "arch") or {}), name=_get(cfg, "name")
    )


def load_tokenizer(cfg: Any, path: str | Path | None = None) -> Any:
    """The tokenizer of the model a config names (``path`` as in :func:`load_model`)."""
    source = str(path) if path is not None else _get(cfg, "source")
    check_tokenizer_files(source)  # else transformers builds an empty tokenizer, silently
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source,
            revision=_get(cfg, "revision") or None,
            trust_remote_code=bool(_get(cfg, "trust_remote_code", False)),
        )
    except OSError as err:
        raise LensLabError(
            f"cannot load model {source!r} (its tokenizer): {err}",
            fix="check the id or path; hub models need network access or a local HF cache "
            "(set HF_HOME), or point `source` at a local directory",
        ) from err
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out; any id works, eos is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _corrupt_weights(source: str, err: Exception) -> LensLabError:
    """A weights file that safetensors cannot read: name the file and how to rebuild it."""
    files = sorted(Path(source).glob("*.safetensors")) if Path(source).is_dir() else []
    where = ", ".join(str(f) for f in files) or f"the weights of {source!r}"
    return LensLabError(
        f"{where} cannot be read ({type(err).__name__}: {err}): the file is corrupt or was cut "
        "off while it was written",
        fix=f"delete {source} and run snakemake again (a trained or converted model is "
        "rebuilt; for a hub model, delete it from the Hugging Face cache to download it again)",
    )
