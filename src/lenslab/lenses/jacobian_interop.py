"""Interop with TransformerLens 4.x's ``JacobianLens`` (optional: tests and benchmarks only).

TransformerLens reads the same artifact format; its layer ``b`` (``blocks.b.hook_out``) is
lenslab's ``resid[b + 1]``. Its bridge wraps a copy of the adapter's model read from the same
local directory (``boot_transformers(hf_model=...)``, offline), so both sides run identical
weights; TransformerLens reloads the tokenizer from that directory too.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lenslab.errors import LensLabError
from lenslab.lenses.jacobian import JacobianLens, block_to_resid
from lenslab.models.adapter import ModelAdapter


def require_transformer_lens() -> Any:
    try:
        from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens
    except ImportError as err:
        raise LensLabError(
            f"transformer_lens is not importable ({err})",
            fix="pip install --target <dir> --no-deps transformer-lens==4.3.0 (plus jaxtyping, "
            "einops, fancy-einsum, typeguard, beartype, datasets, dill, multiprocess, xxhash) "
            "and put <dir> on PYTHONPATH",
        ) from err
    return TLJacobianLens


def tl_bridge(adapter: ModelAdapter) -> Any:
    """A raw TransformerBridge around a second copy of the adapter's model, read from the same
    directory (the same weights). Not ``adapter.model`` itself: booting wraps the HF module's
    components in place (and forces eager attention), which would change the lenslab side."""
    require_transformer_lens()
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    source = getattr(adapter.tokenizer, "name_or_path", "")
    if not source or not Path(source).is_dir():
        raise LensLabError(
            "TransformerLens reloads the tokenizer from its directory; this one has none",
            fix="load the model with lenslab.models.load_model from a local directory",
        )
    dtype = adapter.unembed.weight.dtype
    copy = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(
            source, hf_model=copy, tokenizer=adapter.tokenizer, device="cpu"
        )
    return bridge.eval()


def tl_readout_agreement(
    adapter: ModelAdapter, artifact: str | Path, ids: Sequence[int], bridge: Any = None
) -> float:
    """Largest relative difference between TransformerLens's readout of ``artifact`` (its
    ``JacobianLens.load`` + ``readout``) and lenslab's, over every fitted layer and position."""
    tl_cls = require_transformer_lens()
    bridge = bridge if bridge is not None else tl_bridge(adapter)
    tl_lens = tl_cls.load(str(artifact))
    ours = JacobianLens.load(artifact, adapter)
    tokens = torch.tensor([list(ids)])
    out = tl_lens.readout(bridge, tokens, return_full_logits=True, top_k=1)
    _, resid = adapter.run_with_resid(tokens)
    worst = 0.0
    with torch.no_grad():
        for block in tl_lens.source_layers:
            r = block_to_resid(block)
            mine = ours.logits(resid[r][0], r)
            theirs = out.lens_logits[block].float()
            scale = max(float(theirs.abs().max()), 1.0)
            worst = max(worst, float((mine - theirs).abs().max()) / scale)
    return worst
