"""Direct logit attribution (F10): each component's direct contribution to a token's logit.

The residual stream before the final norm is a sum of components: ``resid[0]`` (embeddings)
plus every block's attention term and MLP term (the outputs the adapter's ``attn_term`` /
``mlp_term`` name: post-sublayer norms where the block has them, times the residual
multiplier of families like Granite). With the final norm's scale *frozen* at
its value in the real forward pass, the norm is affine, so the logit of token ``t`` splits
exactly into one term per component plus a constant term (the norm's bias and the
unembedding's bias):

    logit_t = sum_c  u_t . (gamma * centre(c) * s)  +  u_t . beta + b_t

``centre`` subtracts the mean over the hidden dimension (LayerNorm; identity for RMSNorm) and
``s`` is ``1 / std`` (LayerNorm) or ``1 / rms`` (RMSNorm) of the real final state; ``gamma``
and ``beta`` are measured from the norm module (so Gemma's ``1 + w`` fits), and ``u_t`` folds
in a projection after the norm (OPT-350m) and a logit multiplier (Cohere, Granite). Attention
outputs split further into heads: a head's output is its slice of the output projection's input
times the matching slice of the projection weight, and the projection's bias is its own row.
Where a post-attention norm follows the projection (Gemma 2/3, OLMo 2) its scale is frozen at
the real attention output as well, so heads still add up; its bias joins the bias row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pandas as pd
import torch
from torch import Tensor, nn

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.models.probe import explain_update
from lenslab.prompts import encode_set

# Output projections of attention modules, by attribute name, for the per-head split.
_O_PROJ_NAMES = ("c_proj", "o_proj", "dense", "out_proj")


def _o_proj(attn: nn.Module) -> nn.Module | None:
    if isinstance(attn, nn.Linear):  # the map names the output projection itself (Bloom)
        return attn
    for name in _O_PROJ_NAMES:
        module = getattr(attn, name, None)
        if isinstance(module, nn.Module) and hasattr(module, "weight"):
            return module
    return None


@contextlib.contextmanager
def _record(adapter: ModelAdapter, heads: bool, store: dict) -> Iterator[None]:
    """Record each block's attention and MLP outputs and (for ``heads``) the input of each
    attention output projection into ``store``."""
    handles = []

    def keep(key):
        def hook(_mod, args, output):
            # Clone: some blocks add into a sublayer's output in place afterwards (Falcon).
            store[key] = (output[0] if isinstance(output, tuple) else output).detach().clone()

        return hook

    def keep_input(key):
        def hook(_mod, args):
            store[key] = args[0]

        return hook

    for layer in range(adapter.n_layers):
        handles.append(adapter.attn_term(layer).register_forward_hook(keep(("attn", layer))))
        handles.append(adapter.mlp_term(layer).register_forward_hook(keep(("mlp", layer))))
        if heads and adapter.mixer_kind(layer) == "attention":
            proj = _o_proj(adapter.attn(layer))
            if proj is None:
                raise LensLabError(
                    f"block {layer} of {adapter.name or 'this model'}: no attention output "
                    f"projection named one of {_O_PROJ_NAMES}",
                    fix="run direct logit attribution with heads=False (per block only)",
                )
            handles.append(proj.register_forward_pre_hook(keep_input(("z", layer))))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _frozen_norm(adapter: ModelAdapter, final: Tensor) -> tuple[Tensor, Tensor, bool]:
    """(gamma * s, beta, centre) of the final norm at the real final state ``final`` [D]."""
    norm = adapter.final_norm
    d = final.shape[-1]
    if norm is None:
        return torch.ones(d), torch.zeros(d), False
    form = adapter.norm_form(norm)
    return form.gamma * form.scale(final)[..., 0], form.beta, form.centred


def _unembedding(adapter: ModelAdapter, ids: list[int]) -> tuple[Tensor, Tensor]:
    """(u [K, D], b [K]): the logits of ``ids`` are ``u @ normed + b`` (projection after the
    norm folded in, logit multiplier applied)."""
    w = adapter.unembed.weight.detach().float()[ids]
    bias = getattr(adapter.unembed, "bias", None)
    b = torch.zeros(len(ids)) if bias is None else bias.detach().float()[ids]
    proj = adapter.post_norm
    if proj is not None:
        b = b + (0 if proj.bias is None else w @ proj.bias.detach().float())
        w = w @ proj.weight.detach().float()
    return w * adapter.logit_scale, b * adapter.logit_scale


def _head_outputs(proj: nn.Module, z: Tensor, n_heads: int) -> Tensor:
    """[H, D]: each head's share of the output projection (bias excluded) for one position."""
    d_in = z.shape[-1]
    dh = d_in // n_heads
    w = proj.weight.detach().float()
    # Conv1D (GPT-2) stores [in, out]; nn.Linear stores [out, in].
    w_in_out = w if w.shape[0] == d_in and not isinstance(proj, nn.Linear) else w.T
    zh = z.float().reshape(n_heads, dh)
    return torch.einsum("hd,hdo->ho", zh, w_in_out.reshape(n_heads, dh, -1))


def _n_heads(adapter: ModelAdapter) -> int:
    cfg = adapter.model.config
    for key in ("num_attention_heads", "n_head", "num_heads"):
        value = getattr(cfg, key, None)
        if isinstance(value, int):
            return value
    raise LensLabError("the model config names no number of attention heads", fix="heads=False")


@torch.no_grad()
def direct_logit_attribution(
    adapter: ModelAdapter,
    input_ids: list[int],
    tokens: dict[str, int],
    position: int = -1,
    heads: bool = False,
    atol: float | None = None,
) -> pd.DataFrame:
    """Direct contributions to the logits of ``tokens`` ({label: id}) at ``position``.

    Rows: (component, kind, layer, head, token, value). ``kind`` is embed, attn, mlp, head
    (with ``heads``), attn_bias (the output projection's bias, with ``heads``) or bias (the
    final norm's bias plus the unembedding's bias); the rows of kinds embed, attn, mlp and
    bias sum to the model's logit (checked to ``atol``, relative to the logit scale; None:
    :func:`completeness_atol` of the model's dtype).
    """
    adapter.require("dla")
    if atol is None:
        atol = completeness_atol(adapter.unembed.weight.dtype)
    store: dict = {}
    states: list[Tensor] = []
    ids = torch.tensor([input_ids], device=adapter.device)
    with _record(adapter, heads, store), adapter.record_resid(states):
        logits = adapter.forward(ids)[0, position].float()

    def at(t: Tensor) -> Tensor:  # OPT's MLP runs on [B*T, D]: view it as [B, T, D] first
        return t.reshape(*states[0].shape[:2], -1)[0, position]

    m = adapter.residual_multiplier  # the residual gains m * each sublayer term (Granite)
    parts = [("embed", "embed", -1, -1, at(states[0]))]
    for layer in range(adapter.n_layers):
        parts.append((f"attn {layer}", "attn", layer, -1, m * at(store[("attn", layer)])))
        parts.append((f"mlp {layer}", "mlp", layer, -1, m * at(store[("mlp", layer)])))
    scale, beta, centre = _frozen_norm(adapter, at(states[-1]))
    u, b = _unembedding(adapter, list(tokens.values()))  # [K, D], [K]
    const = u @ beta + b

    def project(vec: Tensor) -> Tensor:
        v = vec.float()
        return u @ (scale * (v - v.mean() if centre else v))

    rows = []

    def add(component, kind, layer, head, values):
        for (label, _), value in zip(tokens.items(), values.tolist(), strict=True):
            rows.append((component, kind, layer, head, label, value))

    for component, kind, layer, head, vec in parts:
        add(component, kind, layer, head, project(vec))
    add("bias", "bias", -1, -1, const)
    if heads:
        _add_heads(adapter, store, position, lambda v: project(m * v), add)
    table = pd.DataFrame(rows, columns=["component", "kind", "layer", "head", "token", "value"])
    _check_complete(adapter, input_ids, table, logits, tokens, atol)
    if heads:
        _check_heads(table, atol)
    return table


def _add_heads(adapter, store, position, project, add) -> None:
    n_heads = _n_heads(adapter)
    for layer in range(adapter.n_layers):
        if ("z", layer) not in store:  # a linear-attention / mamba / conv mixer has no heads
            continue
        proj = _o_proj(adapter.attn(layer))
        outs = _head_outputs(proj, store[("z", layer)][0, position], n_heads)
        has_bias = getattr(proj, "bias", None) is not None
        bias = proj.bias.detach().float() if has_bias else torch.zeros(outs.shape[-1])
        post, const = _post_norm(adapter, layer, outs.sum(0) + bias)
        for h in range(n_heads):
            add(f"L{layer}H{h}", "head", layer, h, project(post(outs[h])))
        if has_bias or const is not None:
            extra = post(bias) + (0 if const is None else const)
            add(f"attn {layer} bias", "attn_bias", layer, -1, project(extra))


def _post_norm(adapter: ModelAdapter, layer: int, whole: Tensor):
    """(linear map, constant) of the post-attention norm frozen at the real attention output
    ``whole`` (Gemma 2/3, OLMo 2): the term is ``map(sum of head outputs + bias) + const``.
    Identity and None without a post-attention norm."""
    if adapter.arch.attn_out is None:
        return (lambda v: v), None
    form = adapter.norm_form(adapter.attn_term(layer))
    scale = form.gamma * form.scale(whole)[..., 0]

    def frozen(v: Tensor) -> Tensor:
        v = v.float()
        return scale * (v - v.mean() if form.centred else v)

    return frozen, form.beta


def completeness_atol(dtype: torch.dtype) -> float:
    """Tolerance of the completeness checks, relative to the logit scale: 1e-3 in float32 and
    float64; half precision rounds every component and the model's own sum, so 4 machine
    epsilons of the dtype there (float16 0.0039, bfloat16 0.031). A residual stream with extra
    norms misses by far more than that."""
    return max(1e-3, 4 * torch.finfo(dtype).eps)


def _check_complete(
    adapter: ModelAdapter,
    input_ids: list[int],
    table: pd.DataFrame,
    logits: Tensor,
    tokens: dict[str, int],
    atol: float,
) -> None:
    """The per-component terms must add up to the model's logits (the F10 completeness check).
    A failure names its cause as the gate would, diagnosed on this prompt."""
    whole = table[table["kind"].isin(["embed", "attn", "mlp", "bias"])]
    sums = whole.groupby("token", sort=False)["value"].sum()
    for label, tid in tokens.items():
        real = float(logits[tid])
        if abs(sums[label] - real) > atol * max(1.0, abs(real)):
            dtype = adapter.unembed.weight.dtype
            structural = explain_update(adapter, input_ids)
            if not structural and dtype in (torch.float16, torch.bfloat16):
                # Every term and the model's own sum are rounded to half precision: a miss of a
                # percent or two over dozens of terms is rounding, not a wrong map.
                miss = abs(sums[label] - real) / max(1.0, abs(real))
                raise LensLabError(
                    f"the components sum to {sums[label]:.5f}, not the logit {real:.5f} of "
                    f"{label!r} ({miss:.1%} of the logit scale): {dtype} rounding of each of "
                    f"the {len(whole)} terms and of the model's own forward, beyond the "
                    f"{atol:.2%} that {dtype} allows here; every block's update is its "
                    "attention plus MLP term, so the map is right",
                    fix="run direct logit attribution in float32 (the model config's "
                    "`dtype: float32`)",
                )
            cause = structural or (
                "every block's update is its attention term plus MLP term here, so the final "
                "norm or the unembedding is not what the adapter applies"
            )
            raise LensLabError(
                f"the components sum to {sums[label]:.5f}, not the logit {real:.5f} of "
                f"{label!r} on this prompt, although the fidelity gate's identities held on its "
                f"probe: {cause}",
                fix="map the terms added to the residual stream with the model config's "
                "`arch:` block (attn, mlp, attn_out, mlp_out) if the cause is a mapping; "
                "otherwise skip F10 for this model",
            )


def _check_heads(table: pd.DataFrame, atol: float) -> None:
    """Heads plus the projection bias (and a post-attention norm's constant) must add up to
    their block's attention term."""
    split = table[table["kind"].isin(["head", "attn_bias"])].groupby(["layer", "token"])["value"]
    whole = table[table["kind"] == "attn"].set_index(["layer", "token"])["value"]
    gap = (split.sum() - whole).abs()
    if float(gap.max()) > atol * max(1.0, float(whole.abs().max())):
        raise LensLabError(
            "per-head terms do not add up to the attention output (max gap "
            f"{float(gap.max()):.5f}): the output projection is not the attention's last step",
            fix="run direct logit attribution with heads=False (per block only)",
        )


def dla_table(
    adapter: ModelAdapter, prompt_set, prepend_bos: bool | None = None, heads: bool = True
) -> pd.DataFrame:
    """F10 table: direct logit attribution at the last position of every prompt that names
    an answer, for the answer and each tracked target. Adds ``prompt_id`` and ``answer``."""
    frames = []
    for p in encode_set(adapter.tokenizer, prompt_set, prepend_bos):
        if p.answer_id is None:
            continue
        answer = adapter.tokenizer.decode([p.answer_id]).strip()
        tokens = {answer: p.answer_id, **{w: i for w, i in p.target_ids.items() if w != answer}}
        table = direct_logit_attribution(adapter, p.input_ids, tokens, heads=heads)
        frames.append(table.assign(prompt_id=p.id, answer=answer))
    if not frames:
        raise LensLabError(
            f"prompt set {prompt_set.get('name', '?')!r} has no prompt with an `answer`",
            fix="give the prompts of an F10 prompt set an `answer` (and `targets` to compare)",
        )
    cols = ["prompt_id", "answer", "token", "component", "kind", "layer", "head", "value"]
    return pd.concat(frames, ignore_index=True)[cols]
