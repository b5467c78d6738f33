"""One adapter between every method and every architecture.

Methods ask the adapter for the residual stream, the blocks, the attention and MLP modules, the
final norm and the unembedding. No method knows an architecture's attribute names: they live in
`ARCHITECTURES` below, and a model whose layout is not listed can be mapped by hand through the
model config's ``arch:`` block.

Naming of states (TransformerLens style): ``resid[0]`` is the input of block 0 (embeddings, plus
positions where the model adds them), ``resid[l]`` for ``l >= 1`` is the output of block ``l-1``.
``resid[L]`` is the residual stream *before* the final norm: unlike HF's ``hidden_states[-1]``,
which most architectures return already normalised, the adapter applies the final norm only in
:meth:`ModelAdapter.decode`, so the logit lens at layer ``L`` is the model's own logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor, nn

from lenslab.errors import LensLabError


@dataclass(frozen=True)
class ArchMap:
    """Dotted attribute paths, relative to the causal-LM module (blocks, norm) or a block."""

    blocks: str
    final_norm: str | None
    attn: str
    mlp: str
    post_norm: str | None = None  # a projection between final norm and unembedding (OPT-350m)


_DECODER = ArchMap(blocks="model.layers", final_norm="model.norm", attn="self_attn", mlp="mlp")
ARCHITECTURES: dict[str, ArchMap] = {
    "gpt2": ArchMap(blocks="transformer.h", final_norm="transformer.ln_f", attn="attn", mlp="mlp"),
    "gptj": ArchMap(blocks="transformer.h", final_norm="transformer.ln_f", attn="attn", mlp="mlp"),
    "gpt_neox": ArchMap(
        blocks="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        attn="attention",
        mlp="mlp",
    ),
    "opt": ArchMap(
        blocks="model.decoder.layers",
        final_norm="model.decoder.final_layer_norm",
        attn="self_attn",
        mlp="fc2",
        post_norm="model.decoder.project_out",
    ),
    **{
        name: _DECODER
        for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo")
    },
}
ARCH_KEYS = [f.name for f in fields(ArchMap)]


def _get(root: nn.Module, path: str | None) -> nn.Module | None:
    """Follow a dotted path; None when the path is empty or ends at None (optional parts)."""
    if not path:
        return None
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def resolve_arch(model: nn.Module, overrides: dict | None = None) -> ArchMap:
    """The attribute map for ``model``: the built-in entry, updated by the config's ``arch:``."""
    model_type = getattr(model.config, "model_type", "?")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(ARCH_KEYS))
    if unknown:
        raise LensLabError(
            f"unknown arch key(s) {unknown}",
            fix=f"use only {ARCH_KEYS} under the model config's `arch:` block",
        )
    base = ARCHITECTURES.get(model_type)
    if base is None:
        missing = [k for k in ("blocks", "final_norm", "attn", "mlp") if k not in overrides]
        if missing:
            raise LensLabError(
                f"architecture {model_type!r} is not mapped: lenslab cannot find {missing}",
                fix="add them to the model config, e.g. `arch: {blocks: model.layers, "
                "final_norm: model.norm, attn: self_attn, mlp: mlp}` "
                f"(paths from the {type(model).__name__} module; keys: {ARCH_KEYS})",
            )
        return ArchMap(**{k: overrides.get(k) for k in ARCH_KEYS})
    arch = replace(base, **overrides)
    blocks = _get(model, arch.blocks)
    if not isinstance(blocks, nn.ModuleList):
        raise LensLabError(
            f"{model_type!r}: no list of blocks at {arch.blocks!r}",
            fix="set `arch.blocks` in the model config to the dotted path of the block list",
        )
    return arch


def _first_tensor(output: object) -> Tensor:
    """Blocks return a tensor (transformers 5) or a tuple whose first item is the state."""
    return output[0] if isinstance(output, tuple) else output  # type: ignore[index,return-value]


def _replace_first(output: object, new: Tensor) -> object:
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


class ModelAdapter:
    """A causal LM seen as: resid[0] -> block_0 -> ... -> block_{L-1} -> norm -> unembed."""

    def __init__(self, model: nn.Module, tokenizer=None, arch: dict | None = None, name: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "")
        self.arch = resolve_arch(model, arch)
        self.blocks: nn.ModuleList = _get(model, self.arch.blocks)  # type: ignore[assignment]
        self.final_norm = _get(model, self.arch.final_norm)
        self.post_norm = _get(model, self.arch.post_norm)
        self.unembed: nn.Module = model.get_output_embeddings()
        if self.unembed is None:
            raise LensLabError(
                f"{type(model).__name__} has no output embedding",
                fix="load the model with a causal-LM head (AutoModelForCausalLM)",
            )
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of blocks L; the residual stream has L + 1 states."""
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return (
            self.unembed.weight.shape[1] if self.post_norm is None else self.post_norm.in_features
        )

    @property
    def vocab_size(self) -> int:
        return self.unembed.weight.shape[0]

    @property
    def device(self) -> torch.device:
        return self.unembed.weight.device

    def check_layer(self, layer: int) -> int:
        """Validate a residual-stream index (0..L); negative indices count from the end."""
        n = self.n_layers
        if not -(n + 1) <= layer <= n:
            raise LensLabError(
                f"layer {layer} is out of range for {self.name or 'this model'} "
                f"({n} blocks: residual states 0..{n})",
                fix=f"choose layers between 0 and {n} (or -1 for the last)",
            )
        return layer % (n + 1)

    def attn(self, block: int) -> nn.Module:
        return self._sub(block, self.arch.attn, "attn")

    def mlp(self, block: int) -> nn.Module:
        return self._sub(block, self.arch.mlp, "mlp")

    def _sub(self, block: int, path: str, key: str) -> nn.Module:
        module = _get(self.blocks[block], path)
        if module is None:
            raise LensLabError(
                f"block {block} of {self.name or 'this model'} has no {key} module at {path!r}",
                fix=f"set `arch.{key}` in the model config to its dotted path inside a block",
            )
        return module

    # -- decoding ----------------------------------------------------------------------------
    def normalize(self, h: Tensor, affine: bool = True) -> Tensor:
        """The final norm; with ``affine=False`` only its normalisation (2020 logit lens)."""
        if self.final_norm is None:
            return h
        if affine:
            # a half-precision model norms in its own dtype (states on disk are float32)
            return self.final_norm(h.to(self.unembed.weight.dtype))
        return _normalize_only(self.final_norm, h)

    def unembed_normed(self, x: Tensor) -> Tensor:
        """Logits from an already-normalised state (projection, unembedding, soft-capping)."""
        if self.post_norm is not None:
            x = self.post_norm(x)
        logits = self.unembed(x.to(self.unembed.weight.dtype))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def decode(self, h: Tensor, affine: bool = True) -> Tensor:
        """Logit lens: final norm then unembedding. ``decode(resid[L])`` is the model's logits.
        Float32 whatever the model's dtype, so every statistic accumulates in float32."""
        return self.unembed_normed(self.normalize(h, affine)).float()

    # -- running -----------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Plain forward; returns logits [B, T, V]."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    @torch.no_grad()
    def run_with_resid(
        self, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Logits [B, T, V] and the residual stream [L+1, B, T, D] of one forward pass."""
        states: list[Tensor] = []
        with self.record_resid(states):
            logits = self.forward(input_ids, attention_mask)
        return logits, torch.stack(states)

    def run_with_resid_graph(self, input_ids: list[int]) -> tuple[Tensor, list[Tensor]]:
        """Logits [1, T, V] and resid[0..L] (each [1, T, D]) of one prompt, inside the autograd
        graph, for gradients with respect to hidden states. The states are the tensors the
        blocks pass on (a view of them would not be an ancestor of later states)."""
        states: list[Tensor] = []
        ids = torch.tensor([input_ids], device=self.device)
        embeds = self.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with torch.enable_grad(), self.record_resid(states):
            logits = self.model(inputs_embeds=embeds).logits
        return logits, states

    @contextlib.contextmanager
    def record_resid(self, states: list[Tensor]) -> Iterator[None]:
        """Append resid[0..L] to ``states`` during the forward passes inside the block."""

        def pre(_mod, args, kwargs):
            states.append(args[0] if args else kwargs["hidden_states"])

        def post(_mod, _args, output):
            states.append(_first_tensor(output))

        handles = [self.blocks[0].register_forward_pre_hook(pre, with_kwargs=True)]
        handles += [b.register_forward_hook(post) for b in self.blocks]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def edit_output(
        self, module: nn.Module, edit: Callable[[Tensor], Tensor | None]
    ) -> Iterator[None]:
        """Let ``edit`` see and replace the first output tensor of ``module`` (for patching)."""

        def hook(_mod, _args, output):
            new = edit(_first_tensor(output))
            return None if new is None else _replace_first(output, new)

        handle = module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


def norm_eps(norm: nn.Module) -> float:
    """The epsilon of a LayerNorm or RMSNorm, whatever the attribute is called."""
    return getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", 1e-5)


def is_rms_norm(norm: nn.Module) -> bool:
    """RMSNorm variants (Llama, Gemma, Qwen, ...) are named so; they do not subtract the mean."""
    return "rms" in type(norm).__name__.lower()


def _normalize_only(norm: nn.Module, h: Tensor) -> Tensor:
    """LayerNorm / RMSNorm without the learned scale and bias."""
    eps = norm_eps(norm)
    if is_rms_norm(norm):
        hf = h.float()
        return (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)
    return nn.functional.layer_norm(h, h.shape[-1:], eps=eps)
