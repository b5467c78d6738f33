"""Deterministic, atomic writing and checked reading of result files.

Every writer goes through :func:`atomic_path`: the file is written next to its target under a
temporary name and renamed into place only when complete, so an interrupted job never leaves a
half-written file that a later job (or a resumed Snakemake run) would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lenslab.errors import LensLabError

if TYPE_CHECKING:
    from torch import Tensor

# safetensors.torch imports torch (1.5 s): the tensor readers and writers import it when
# called, so table and figure jobs, which never touch a tensor, start without it.

META_KEY = "lenslab"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``target`` (file or directory)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Tidy table to Parquet, byte-stable: no pandas index, no creation-time metadata."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)


def read_parquet(path: str | Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as err:
        raise _corrupt(path, err) from err


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise _corrupt(path, err) from err


def write_tensors(
    tensors: dict[str, Tensor], path: str | Path, meta: dict[str, Any] | None = None
) -> None:
    """Safetensors with JSON-encoded metadata (values must be JSON-serialisable).

    The metadata goes into one header key: safetensors writes several keys in hash order, which
    changes from process to process and would break "same config, same bytes".
    """
    from safetensors.torch import save_file

    header = {META_KEY: json.dumps(meta or {}, sort_keys=True)}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)


def read_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata of a safetensors file; a damaged file is a clear error."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            raw = handle.metadata() or {}
        return tensors, json.loads(raw.get(META_KEY, "{}"))
    except (OSError, SafetensorError, json.JSONDecodeError, ValueError) as err:
        raise _corrupt(path, err) from err


def _corrupt(path: str | Path, err: Exception) -> LensLabError:
    return LensLabError(
        f"cannot read {path}: {err}",
        fix="the file is missing or damaged; delete it and rerun snakemake, which rebuilds it",
    )
