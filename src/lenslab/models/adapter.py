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
from typing import Any

import torch
from torch import Tensor, nn

from lenslab.errors import LensLabError


@dataclass(frozen=True)
class ArchMap:
    """Dotted attribute paths, relative to the causal-LM module (blocks, norm) or a block.

    ``attn`` / ``mlp`` are the modules whose outputs the patching kinds of the same names
    restore. ``attn_out`` / ``mlp_out`` name the module whose output is the term actually added
    to the residual stream when that is not ``attn`` / ``mlp`` itself (post-sublayer norms of
    Gemma 2/3 and OLMo 2); direct logit attribution uses those terms.

    A block path may list alternatives separated by ``|``: each block uses the first that
    exists in it. Hybrids need this, because their blocks differ in the mixer they run before
    the MLP (``attn: "self_attn|linear_attn"`` for Qwen3-Next); ``attn`` then names each
    block's mixer, whatever its kind (see :func:`mixer_kind`).
    """

    blocks: str
    final_norm: str | None
    attn: str
    mlp: str
    post_norm: str | None = None  # a projection between final norm and unembedding (OPT-350m)
    attn_out: str | None = None
    mlp_out: str | None = None


_DECODER = ArchMap(blocks="model.layers", final_norm="model.norm", attn="self_attn", mlp="mlp")
_GPT2 = ArchMap(blocks="transformer.h", final_norm="transformer.ln_f", attn="attn", mlp="mlp")
# Post-sublayer norms: the residual gains post_norm(attn(x)) and post_norm(mlp(x)).
_POST_NORMED = replace(
    _DECODER, attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm"
)
ARCHITECTURES: dict[str, ArchMap] = {
    "gpt2": _GPT2,
    "gptj": _GPT2,
    "gpt_bigcode": _GPT2,
    "gpt_neo": replace(_GPT2, attn="attn.attention"),
    # Bloom's attention and MLP modules add the residual themselves (dropout_add): their inner
    # output projections are the terms added to the residual stream.
    "bloom": replace(_GPT2, attn="self_attention.dense", mlp="mlp.dense_4h_to_h"),
    "falcon": replace(_GPT2, attn="self_attention", mlp="mlp"),
    # MPT's MLP adds the residual itself; its down projection is the MLP's term.
    "mpt": ArchMap(
        blocks="transformer.blocks",
        final_norm="transformer.norm_f",
        attn="attn",
        mlp="ffn.down_proj",
    ),
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
    "phi": replace(_DECODER, final_norm="model.final_layernorm"),
    "llama4_text": replace(_DECODER, mlp="feed_forward"),
    "granitemoe": replace(_DECODER, mlp="block_sparse_moe"),
    "glm4": replace(_DECODER, attn_out="post_self_attn_layernorm", mlp_out="post_mlp_layernorm"),
    **{
        name: _DECODER
        for name in (
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma",
            "phi3",
            "olmo",
            "stablelm",
            "starcoder2",
            "cohere",
            "granite",
            "mixtral",
            "qwen2_moe",
            "qwen3_moe",
            "deepseek_v3",
            "gpt_oss",
            "cohere2",
            "nemotron",
            "smollm3",
            "ernie4_5",
            "seed_oss",
        )
    },
    **{name: _POST_NORMED for name in ("gemma2", "gemma3_text", "olmo2", "olmo3", "exaone4")},
    # Gemma 4 also adds a per-layer-input term and scales the block output (layer_scalar): the
    # gate's sublayer_sum names them and rules out DLA and attn/mlp patching.
    "gemma4_text": _POST_NORMED,
    # Hybrids: blocks whose mixer is attention or linear attention / mamba / a short conv.
    "qwen3_next": replace(_DECODER, attn="self_attn|linear_attn"),
    "qwen3_5_text": replace(_DECODER, attn="self_attn|linear_attn"),
    "lfm2": replace(
        _DECODER, final_norm="model.embedding_norm", attn="self_attn|conv", mlp="feed_forward"
    ),
    "jamba": replace(
        _DECODER, final_norm="model.final_layernorm", attn="self_attn|mamba", mlp="feed_forward"
    ),
    # MiniMax takes the residual after the input norm (post-LN): the gate names it and rules
    # out the methods that need an additive split.
    "minimax": _DECODER,
    # Falcon-H1 runs mamba and attention in parallel on the same input: the map names the
    # attention, and the gate rules out the methods that need the block's terms (sublayer_sum).
    "falcon_h1": replace(_DECODER, final_norm="model.final_layernorm", mlp="feed_forward"),
}
# Mixer kinds by the attribute name of the module an ``attn`` alternative matched.
MIXER_KINDS = {
    "linear_attn": "linear_attention",
    "mamba": "mamba",
    "conv": "conv",
}
ARCH_KEYS = [f.name for f in fields(ArchMap)]
_REQUIRED_KEYS = ("blocks", "final_norm", "attn", "mlp")
# Config keys of scalar factors some families apply to their logits: (key, multiply?).
LOGIT_FACTORS = (("logit_scale", True), ("lm_head_multiplier", True), ("logits_scaling", False))


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


def _get_any(block: nn.Module, path: str | None) -> tuple[str, nn.Module] | None:
    """The first alternative of ``path`` (``a|b``) that names a module of ``block``, with the
    alternative that matched; None when none does."""
    for alt in (path or "").split("|"):
        module = _get(block, alt.strip())
        if isinstance(module, nn.Module):
            return alt.strip(), module
    return None


def mixer_kind(path: str, module: nn.Module) -> str:
    """``attention``, ``linear_attention``, ``mamba`` or ``conv``: from the attribute name that
    matched (``MIXER_KINDS``), else from the class name; attention by default (a module map
    like Bloom's names the attention's output projection)."""
    kind = MIXER_KINDS.get(path.split(".")[-1])
    if kind:
        return kind
    name = type(module).__name__.lower()
    markers = (
        ("mamba", "mamba"),
        ("deltanet", "linear_attention"),
        ("lightning", "linear_attention"),  # MiniMax's linear attention sits at self_attn
        ("conv", "conv"),
    )
    for marker, kind in markers:
        if marker in name:
            return kind
    return "attention"


def resolve_arch(model: nn.Module, overrides: dict | None = None) -> ArchMap:
    """The attribute map for ``model``: the built-in entry, updated by the config's ``arch:``.

    Every path is checked against the model, so a typo is an error here rather than a lens
    that silently skips a norm.
    """
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
        missing = [k for k in _REQUIRED_KEYS if k not in overrides]
        if missing:
            raise LensLabError(
                f"architecture {model_type!r} is not mapped: lenslab cannot find {missing}",
                fix="add them to the model config, e.g. `arch: {blocks: model.layers, "
                "final_norm: model.norm, attn: self_attn, mlp: mlp}` "
                f"(paths from the {type(model).__name__} module; keys: {ARCH_KEYS})",
            )
        arch = ArchMap(**{k: overrides.get(k) for k in ARCH_KEYS})
    else:
        arch = replace(base, **overrides)
        # Built-in maps name these where most sizes have them: OPT-350m has a projection but
        # no final norm (post-LN); the gate then checks the lens without them.
        for key in ("final_norm", "post_norm"):
            if key not in overrides and _get(model, getattr(arch, key)) is None:
                arch = replace(arch, **{key: None})
    _validate_paths(model, arch, model_type)
    return arch


def _validate_paths(model: nn.Module, arch: ArchMap, model_type: str) -> None:
    """Every path of ``arch`` must name a module of ``model`` (block paths: in every block)."""
    blocks = _get(model, arch.blocks)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise LensLabError(
            f"{model_type!r}: no list of blocks at arch.blocks={arch.blocks!r}",
            fix="set `arch.blocks` in the model config to the dotted path of the block list "
            f"(a ModuleList inside {type(model).__name__})",
        )
    for key in ("final_norm", "post_norm"):
        path = getattr(arch, key)
        if path and not isinstance(_get(model, path), nn.Module):
            raise LensLabError(
                f"{model_type!r}: no module at arch.{key}={path!r}",
                fix=f"set `arch.{key}` to a dotted path inside {type(model).__name__} "
                "(print the model to see its module names)",
            )
    for key in ("attn", "mlp", "attn_out", "mlp_out"):
        path = getattr(arch, key)
        if not path:
            continue
        bad = [i for i, b in enumerate(blocks) if _get_any(b, path) is None]
        if bad:
            raise LensLabError(
                f"{model_type!r}: block(s) {bad} have no module at arch.{key}={path!r}",
                fix=f"set `arch.{key}` to a dotted path inside a {type(blocks[bad[0]]).__name__} "
                "that exists in every block, or alternatives separated by `|` for blocks that "
                "differ (e.g. `self_attn|linear_attn`: the first that exists in each block)",
            )


def refuse_extra_state_axis(config: object, name: str = "") -> None:
    """Refuse a model whose blocks pass on more than one residual stream.

    Gemma 3n's AltUp keeps ``altup_num_inputs`` predictions of the stream, so its hidden states
    are ``[altup, batch, tokens, d_model]`` and only the mixed final prediction is decoded: a
    lens, a patch or an attribution on one ``[batch, tokens, d_model]`` state would read one
    slice of four and be wrong without an error."""
    n = getattr(config, "altup_num_inputs", None)
    if isinstance(n, int) and n > 1:
        model = name or getattr(config, "model_type", "this model")
        raise LensLabError(
            f"AltUp's extra state axis is not supported ({model} keeps {n} predictions of the "
            f"residual stream: hidden states [{n}, batch, tokens, d_model]); no lenslab method "
            "reads them",
            fix="use a model without AltUp (a Gemma 2/3/4 model instead of Gemma 3n); "
            "lenslab refuses it rather than read one of the predictions as the stream",
        )


def logit_multiplier(config: object) -> float:
    """The scalar the model applies to its logits after the unembedding (1.0 for most)."""
    factor = 1.0
    for key, multiply in LOGIT_FACTORS:
        value = getattr(config, key, None)
        if isinstance(value, int | float) and not isinstance(value, bool) and value != 1:
            factor = factor * value if multiply else factor / value
    return factor


def output_cache(out: object) -> Any:
    """The key/value cache a forward returned (transformers 5 names it ``cache``, earlier
    versions ``past_key_values``), or None."""
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


# Output projections of attention modules, by attribute name (GPT-2 c_proj, Llama o_proj,
# Falcon / NeoX dense, OPT out_proj): their input is the heads' outputs, concatenated.
O_PROJ_NAMES = ("c_proj", "o_proj", "dense", "out_proj")


def attn_projection(attn: nn.Module) -> nn.Module | None:
    """The output projection of an attention module (the module itself when the map names
    the projection, as Bloom's does), or None."""
    if isinstance(attn, nn.Linear):
        return attn
    for name in O_PROJ_NAMES:
        module = getattr(attn, name, None)
        if isinstance(module, nn.Module) and hasattr(module, "weight"):
            return module
    return None


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
        refuse_extra_state_axis(model.config, self.name)
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
        # Scalars some families apply outside the modules lenslab calls (Cohere, Granite).
        self.logit_scale = logit_multiplier(model.config)
        mult = getattr(model.config, "residual_multiplier", None)
        self.residual_multiplier = float(mult) if isinstance(mult, int | float) else 1.0
        self._norm_forms: dict[int, NormForm] = {}
        self._fidelity = None

    # -- fidelity ----------------------------------------------------------------------------
    # The gate lives above the methods it exercises (lenslab.gate); importing it registers its
    # runner here, so the models layer never imports a method.
    _gate: Callable[[ModelAdapter], Any] | None = None

    @classmethod
    def register_gate(cls, runner: Callable[[ModelAdapter], Any]) -> None:
        """Install the fidelity gate (:func:`lenslab.gate.fidelity.run_gate`)."""
        cls._gate = runner

    @property
    def fidelity(self):
        """The :class:`~lenslab.gate.fidelity.FidelityReport` of this model, run on first use
        (:func:`lenslab.gate.load_model` runs it at load, so a broken map fails there)."""
        if self._fidelity is None:
            if ModelAdapter._gate is None:
                raise LensLabError(
                    f"no fidelity gate has checked {self.name or 'this model'}, so no method "
                    "can tell whether the identities it relies on hold",
                    fix="load models with lenslab.gate.load_model (or import lenslab.gate, "
                    "which registers the gate, before running a method)",
                )
            self._fidelity = ModelAdapter._gate(self)
        return self._fidelity

    def available(self, method: str) -> bool:
        """Whether the fidelity gate allows ``method`` (see ``fidelity.METHODS``) here."""
        return self.fidelity.available(method)

    def require(self, method: str) -> None:
        """Raise the gate's LensLabError if it ruled ``method`` out for this model."""
        self.fidelity.require(method)

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
    def d_embed(self) -> int:
        """Width of the token-embedding output (differs from d_model with OPT's project_in)."""
        return self.model.get_input_embeddings().weight.shape[1]

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

    def mixer_kind(self, block: int) -> str:
        """What block ``block``'s ``attn`` module is: ``attention``, ``linear_attention``,
        ``mamba`` or ``conv`` (hybrids differ per block; only attention splits into heads)."""
        path, module = _get_any(self.blocks[block], self.arch.attn)  # type: ignore[misc]
        return mixer_kind(path, module)

    def n_heads(self) -> int:
        """Number of query heads per attention block (from the model config)."""
        cfg = self.model.config
        for key in ("num_attention_heads", "n_head", "num_heads"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        raise LensLabError(
            f"the config of {self.name or 'this model'} names no number of attention heads",
            fix="set num_attention_heads in the model config, or use per-block methods",
        )

    def head_split(self, block: int) -> tuple[nn.Module, int, int]:
        """(output projection, heads, head width) of block ``block``'s attention: a head's
        output is its slice ``[h * width, (h + 1) * width)`` of the projection's input (the
        query heads' outputs, concatenated; grouped-query attention shares keys and values
        between query heads but still has one output slice per query head)."""
        if self.mixer_kind(block) != "attention":
            raise LensLabError(
                f"block {block} of {self.name or 'this model'} runs a "
                f"{self.mixer_kind(block)} mixer, which has no attention heads",
                fix="patch heads only in attention blocks (kind attn patches the whole mixer)",
            )
        proj = attn_projection(self.attn(block))
        if proj is None:
            raise LensLabError(
                f"block {block} of {self.name or 'this model'}: no attention output projection "
                f"named one of {O_PROJ_NAMES}",
                fix="patch the whole attention output (kind attn) for this model",
            )
        d_in = proj.in_features if isinstance(proj, nn.Linear) else proj.weight.shape[0]
        heads = self.n_heads()
        if d_in % heads:
            raise LensLabError(
                f"block {block}: the projection input ({d_in}) does not split into {heads} heads",
                fix="patch the whole attention output (kind attn) for this model",
            )
        return proj, heads, d_in // heads

    def attn_term(self, block: int) -> nn.Module:
        """The module whose output is the attention term added to the residual stream."""
        return self._sub(block, self.arch.attn_out or self.arch.attn, "attn_out")

    def mlp_term(self, block: int) -> nn.Module:
        """The module whose output is the MLP term added to the residual stream."""
        return self._sub(block, self.arch.mlp_out or self.arch.mlp, "mlp_out")

    def _sub(self, block: int, path: str, key: str) -> nn.Module:
        found = _get_any(self.blocks[block], path)
        if found is None:
            raise LensLabError(
                f"block {block} of {self.name or 'this model'} has no {key} module at {path!r}",
                fix=f"set `arch.{key}` in the model config to its dotted path inside a block",
            )
        return found[1]

    # -- decoding ----------------------------------------------------------------------------
    def normalize(self, h: Tensor, affine: bool = True) -> Tensor:
        """The final norm; with ``affine=False`` only its normalisation (2020 logit lens)."""
        if self.final_norm is None:
            return h
        if affine:
            # a half-precision model norms in its own dtype (states on disk are float32)
            return self.final_norm(h.to(self.unembed.weight.dtype))
        return self.norm_form(self.final_norm).normalize(h)

    def norm_form(self, norm: nn.Module) -> NormForm:
        """``norm`` as ``gamma * normalise(x) + beta`` (measured once, then cached)."""
        key = id(norm)
        if key not in self._norm_forms:
            self._norm_forms[key] = measure_norm(norm, self.d_model)
        return self._norm_forms[key]

    def unembed_normed(self, x: Tensor) -> Tensor:
        """Logits from an already-normalised state (projection, unembedding, soft-capping)."""
        if self.post_norm is not None:
            x = self.post_norm(x)
        logits = self.unembed(x.to(self.unembed.weight.dtype))
        if self.logit_scale != 1.0:
            logits = logits * self.logit_scale
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

    def last_logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits [B, V] at the last position. Only that position is unembedded
        (``logits_to_keep``; at a 49k vocabulary the unembedding is a fifth of a forward pass);
        models whose forward lacks the argument unembed every position."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        try:
            return self.model(**kwargs, logits_to_keep=1).logits[:, -1]
        except TypeError:
            return self.model(**kwargs).logits[:, -1]

    @torch.no_grad()
    def resid(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The residual stream [L+1, B, T, D] alone, by :meth:`last_logits`: the states of
        :meth:`run_with_resid` without unembedding every position."""
        states: list[Tensor] = []
        with self.record_resid(states):
            self.last_logits(input_ids, attention_mask)
        # A forward that failed part-way (before the fallback) left states: keep the last run's.
        return torch.stack(states[-(self.n_layers + 1) :])

    def run_with_resid_graph(self, input_ids: list[int]) -> tuple[Tensor, list[Tensor]]:
        """Logits [1, T, V] and resid[0..L] (each [1, T, D]) of one prompt, inside the autograd
        graph, for gradients with respect to hidden states. The states are the tensors the
        blocks pass on (a view of them would not be an ancestor of later states).

        The model runs on token ids, as in every other method; the token-embedding output is
        made a leaf that requires grad, so the graph exists even with frozen weights, and
        whatever the model does after the embedding (multipliers, scaling) stays in."""
        states: list[Tensor] = []
        ids = torch.tensor([input_ids], device=self.device)

        def leaf(_mod, _args, output):
            return output.detach().requires_grad_(True)

        handle = self.model.get_input_embeddings().register_forward_hook(leaf)
        try:
            with torch.enable_grad(), self.record_resid(states):
                logits = self.model(input_ids=ids, use_cache=False).logits
        finally:
            handle.remove()
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


@dataclass(frozen=True)
class NormForm:
    """A norm written as ``gamma * (x - centre) / sqrt(stat(x) + eps) + beta``: ``centre`` is
    the mean (LayerNorm) or nothing (RMSNorm), ``stat`` the variance or the mean square.

    Measured from the module's outputs rather than read from its class, so Gemma's ``1 + w``,
    Nemotron's LayerNorm1P, Cohere's bias-free LayerNorm and non-affine norms all fit."""

    gamma: Tensor  # [D]
    beta: Tensor  # [D]
    centred: bool
    eps: float

    def scale(self, x: Tensor) -> Tensor:
        """``1 / sqrt(stat(x) + eps)`` over the last axis, keepdim (the frozen-scale factor)."""
        xf = x.float()
        stat = (
            xf.var(-1, unbiased=False, keepdim=True) if self.centred else xf.pow(2).mean(-1, True)
        )
        return torch.rsqrt(stat + self.eps)

    def normalize(self, x: Tensor) -> Tensor:
        """The normalisation alone, without gamma and beta (the 2020 logit lens)."""
        xf = x.float()
        centred = xf - xf.mean(-1, keepdim=True) if self.centred else xf
        return (centred * self.scale(xf)).to(x.dtype)

    def apply(self, x: Tensor) -> Tensor:
        """The whole norm, rebuilt from the measured parts (checked against the module)."""
        return self.gamma * self.normalize(x.float()) + self.beta


def measure_norm(norm: nn.Module, d: int) -> NormForm:
    """Measure ``gamma``, ``beta`` and whether ``norm`` centres, from its outputs on probes of
    mean 0 and mean square 1 (where LayerNorm and RMSNorm agree): ``norm(v) - norm(-v)`` is
    ``2 gamma v / sqrt(1 + eps)`` and ``norm(v) + norm(-v)`` is ``2 beta``."""
    p = next(iter(norm.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    eps = float(norm_eps(norm))
    v = torch.ones(d)
    v[1::2] = -1.0
    w = torch.roll(v, 1)
    if d % 2:  # odd width: zero one entry in each probe so both keep mean 0 (different ones)
        v[-1], w[0] = 0.0, 0.0
    probes = (
        torch.stack([v, -v, w, -w, v + 3.0])
        / torch.stack([v, v, w, w, v]).pow(2).mean(-1, keepdim=True).sqrt()
    )
    with torch.no_grad():
        out = norm(probes.to(device, dtype)).float().cpu()
    beta = (out[0] + out[1]) / 2
    fix = (1.0 + eps) ** 0.5
    gv = (out[0] - out[1]) / 2 * fix
    gw = (out[2] - out[3]) / 2 * fix
    pv, pw = probes[0], probes[2]
    gamma = torch.where(
        pv != 0, gv / torch.where(pv != 0, pv, 1.0), gw / torch.where(pw != 0, pw, 1.0)
    )
    # A centring norm ignores a constant shift of its input.
    centred = bool(torch.allclose(out[4], out[0], rtol=1e-3, atol=1e-4))
    return NormForm(gamma=gamma, beta=beta, centred=centred, eps=eps)
