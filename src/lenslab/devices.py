"""Where a model runs: checked before loading, so that a missing GPU is a clear error and never
a silent fall-back to the CPU (a study meant for a GPU would run for days and differ in bytes)."""

from __future__ import annotations

import torch

from lenslab.errors import LensLabError

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device(device: str | None, device_map: str | None = None) -> str:
    """Validate a model config's ``device`` and ``device_map``; return the device string.

    ``device``: cpu | cuda | cuda:<index>. ``device_map``: null (the whole model on ``device``)
    or an accelerate placement (auto, balanced, balanced_low_0, sequential) that spreads a model
    larger than one GPU over every visible GPU (and CPU memory after them).
    """
    device = str(device or "cpu")
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise LensLabError(f"device {device!r} is not cpu, cuda or cuda:<index>",
                           fix="set the model's `device` to cpu, cuda or cuda:0")  # fmt: skip
    if device_map is not None and str(device_map) not in DEVICE_MAPS:
        raise LensLabError(
            f"device_map {device_map!r} is not an accelerate placement",
            fix=f"use one of {list(DEVICE_MAPS)} or null",
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise LensLabError(
                f"device {device!r} was asked for, but torch {torch.__version__} sees no CUDA "
                "GPU (a CPU build of torch, no GPU on this node, or CUDA_VISIBLE_DEVICES empty)",
                fix="run on a GPU node with a CUDA build of torch (a cluster job needs a GPU "
                "request: the model's `gpus` or the profile's gpu resource), or set `device: cpu`",
            )
        if index and int(index) >= torch.cuda.device_count():
            raise LensLabError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) visible",
                fix="use an index below the GPU count, or plain `cuda`",
            )
    return device


def placement(device: str | None, device_map: str | None) -> dict:
    """``from_pretrained`` keyword arguments for the checked placement: accelerate places the
    layers itself with ``device_map``; otherwise the model is moved to ``device`` after loading.
    With ``device: cpu`` a device map may use CPU memory only (never a GPU that happens to be
    visible), which also lets the accelerate path run on machines without one."""
    device = check_device(device, device_map)
    if device_map is None:
        return {}
    if device == "cpu":
        return {"device_map": str(device_map), "max_memory": {"cpu": _cpu_memory()}}
    return {"device_map": str(device_map)}


def _cpu_memory() -> int:
    """Bytes of memory free now (accelerate's own default for the CPU)."""
    import psutil

    return int(psutil.virtual_memory().available)
