"""The tuned lens (Belrose et al. 2023): one learned affine translator per layer, then the logit lens.

``transform(h, l) = h + A_l h + b_l`` for ``l = 0..L-1``; at ``l = L`` the state is the model's
output itself and the transform is the identity. ``A`` and ``b`` start at zero, so an untrained
tuned lens *is* the logit lens (bit for bit). The translator is added residually, as in the
reference code, so weight decay pulls it towards the identity rather than towards zero.

Files are those of the published ``tuned-lens`` package, so its lenses load here and ours load
there: ``params.pt`` is the state dict of the translator list (keys ``{i}.weight``,
``{i}.bias``), ``config.json`` holds ``base_model_name_or_path``, ``d_model``,
``num_hidden_layers``, ``bias``, ``base_model_revision``, ``unembed_hash`` (the package's hash
of the unembedding matrix) and ``lens_type``. lenslab adds one key, ``lenslab``, with the vocab
size, the norm convention and how the lens was trained; the package ignores it (with a warning).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lenslab.errors import LensLabError
from lenslab.io import atomic_path, read_json, write_json
from lenslab.lenses.base import Lens
from lenslab.models.adapter import ModelAdapter

PARAMS_FILE = "params.pt"
CONFIG_FILE = "config.json"
LENS_TYPE = "linear_tuned_lens"


def unembed_hash(adapter: ModelAdapter) -> str:
    """The tuned-lens package's fingerprint of the unembedding matrix.

    It hashes numpy's summarised text of the matrix at one decimal (corners only), so it is
    robust to dtype and small perturbations but tells different models apart. Print options are
    pinned to numpy's defaults so a caller's ``np.set_printoptions`` cannot change the hash.
    """
    weight = adapter.unembed.weight.detach().cpu().float().numpy()
    with np.printoptions(threshold=1000, edgeitems=3, linewidth=75, suppress=False, legacy=False):
        text = np.array_str(weight, precision=1)
    return hashlib.sha256(text.encode()).hexdigest()


class TunedLens(Lens):
    """Per-layer affine translators ``h + A_l h + b_l`` (l < L) followed by the model's decoder."""

    name = "tuned"

    def __init__(
        self,
        adapter: ModelAdapter,
        bias: bool = True,
        affine: bool = True,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(adapter, affine)
        d, n = adapter.d_model, adapter.n_layers
        # Translators train in float32 even for half-precision models: SGD steps of size ~1e-4
        # vanish in bfloat16. transform() casts back to the residual stream's dtype.
        self.layer_translators = nn.ModuleList(
            [nn.Linear(d, d, bias=bias, dtype=dtype) for _ in range(n)]
        )
        for translator in self.layer_translators:
            nn.init.zeros_(translator.weight)
            if translator.bias is not None:
                nn.init.zeros_(translator.bias)
        self.to(adapter.device)
        self.bias = bias
        # Provenance written to config.json under "lenslab" (training settings, text, ...).
        self.info: dict[str, Any] = {}

    @property
    def description(self) -> str:
        return super().description + " (affine translators trained to match the final output)"

    def transform(self, h: Tensor, layer: int) -> Tensor:
        layer = self.adapter.check_layer(layer)
        if layer == self.adapter.n_layers:
            return h
        translator = self.layer_translators[layer]
        x = h.to(translator.weight.dtype)
        return (x + translator(x)).to(h.dtype)

    # -- files -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """config.json in the tuned-lens package's format, plus lenslab's own key."""
        model_cfg = getattr(self.adapter.model, "config", None)
        return {
            "base_model_name_or_path": self.adapter.name or getattr(model_cfg, "_name_or_path", ""),
            "base_model_revision": self.info.get("revision"),
            "d_model": self.adapter.d_model,
            "num_hidden_layers": self.adapter.n_layers,
            "bias": self.bias,
            "unembed_hash": unembed_hash(self.adapter),
            "lens_type": LENS_TYPE,
            "lenslab": {
                "vocab_size": self.adapter.vocab_size,
                "affine": self.affine,
                **{k: v for k, v in self.info.items() if k != "revision"},
            },
        }

    def save(self, path: str | Path) -> None:
        """Write ``params.pt`` and ``config.json`` into the directory ``path`` (atomically)."""
        path = Path(path)
        state = {k: v.detach().cpu() for k, v in self.layer_translators.state_dict().items()}
        # Through a buffer: torch.save names the zip archive after the file it writes, and the
        # atomic temp name carries a pid, so saving to the path would not be byte-stable.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with atomic_path(path / PARAMS_FILE) as tmp:
            tmp.write_bytes(buffer.getvalue())
        write_json(self.config(), path / CONFIG_FILE)

    @classmethod
    def load(cls, path: str | Path, adapter: ModelAdapter, strict: bool = True) -> TunedLens:
        """Load a lens saved by :meth:`save` or by the tuned-lens package.

        A lens made for another model (hidden size, layer count, vocabulary or unembedding) is a
        :class:`LensLabError`; ``strict=False`` turns the unembedding-hash check into a warning.
        """
        path = Path(path)
        config = _read_config(path)
        _check_compatible(config, adapter, path, strict)
        extra = config.get("lenslab") or {}
        lens = cls(adapter, bias=bool(config.get("bias", True)), affine=extra.get("affine", True))
        lens.info = {k: v for k, v in extra.items() if k not in ("vocab_size", "affine")}
        lens.info["revision"] = config.get("base_model_revision")
        state = _read_params(path / PARAMS_FILE)
        _load_state(lens, state, path)
        return lens


def _read_config(path: Path) -> dict[str, Any]:
    if not (path / CONFIG_FILE).is_file() or not (path / PARAMS_FILE).is_file():
        raise LensLabError(
            f"no tuned lens in {path} (need {PARAMS_FILE} and {CONFIG_FILE})",
            fix="train one (snakemake results/tuned_lens/<model>/params.pt) or point to the "
            "directory of a lens saved by the tuned-lens package",
        )
    config = read_json(path / CONFIG_FILE)
    missing = [k for k in ("d_model", "num_hidden_layers") if k not in config]
    if missing:
        raise LensLabError(
            f"{path / CONFIG_FILE} lacks {missing}: not a tuned-lens config",
            fix="save the lens with TunedLens.save or the tuned-lens package",
        )
    lens_type = config.get("lens_type", LENS_TYPE)
    if lens_type != LENS_TYPE:
        raise LensLabError(
            f"{path} holds a {lens_type!r} lens; lenslab reads {LENS_TYPE!r} lenses",
            fix="use a linear tuned lens",
        )
    return config


def _check_compatible(config: dict, adapter: ModelAdapter, path: Path, strict: bool) -> None:
    model = adapter.name or "this model"
    base = config.get("base_model_name_or_path") or "?"
    fix = f"use a lens trained for {model}, or retrain it (lens in {path} was made for {base!r})"
    for key, have in (("d_model", adapter.d_model), ("num_hidden_layers", adapter.n_layers)):
        if int(config[key]) != have:
            raise LensLabError(
                f"tuned lens {key}={config[key]} does not match {model} ({key}={have})", fix=fix
            )
    vocab = (config.get("lenslab") or {}).get("vocab_size")
    if vocab is not None and int(vocab) != adapter.vocab_size:
        raise LensLabError(
            f"tuned lens vocab_size={vocab} does not match {model} (vocab_size="
            f"{adapter.vocab_size})",
            fix=fix,
        )
    saved = config.get("unembed_hash")
    if not saved:
        warnings.warn(
            f"{path / CONFIG_FILE} has no unembed_hash: cannot check that the lens was trained "
            f"for {model}",
            stacklevel=3,
        )
    elif saved != unembed_hash(adapter):
        message = f"tuned lens in {path} was trained with a different unembedding than {model}'s"
        if strict:
            raise LensLabError(message, fix=fix + "; or load with strict=False to use it anyway")
        warnings.warn(message, stacklevel=3)


def _read_params(file: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors have many types
        raise LensLabError(
            f"cannot read {file}: {err}",
            fix="the file is damaged or not a tensor state dict; retrain or re-download it",
        ) from err
    if not isinstance(state, dict):
        raise LensLabError(f"{file} is not a state dict", fix="save it with TunedLens.save")
    return state


def _load_state(lens: TunedLens, state: dict[str, Tensor], path: Path) -> None:
    # Accept both the package's file (keys "0.weight") and a whole-lens state dict
    # ("layer_translators.0.weight", "unembed.*"), which some scripts save instead.
    state = {
        k.removeprefix("layer_translators."): v
        for k, v in state.items()
        if not k.startswith("unembed.")
    }
    expected = lens.layer_translators.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise LensLabError(
            f"{path / PARAMS_FILE} does not fit a {lens.adapter.n_layers}-layer tuned lens: "
            f"missing {missing[:6]}, unexpected {unexpected[:6]}",
            fix="check config.json's num_hidden_layers and bias against the saved translators",
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise LensLabError(
                f"{path / PARAMS_FILE}: {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(expected[key].shape)}",
                fix="the file belongs to another model; retrain the lens",
            )
    lens.layer_translators.load_state_dict({k: v.float() for k, v in state.items()})
