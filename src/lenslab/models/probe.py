"""The probe run and the block diagnosis behind the fidelity gate (:mod:`lenslab.gate.fidelity`)
and direct logit attribution's completeness check: hook primitives on the adapter, no method.

:class:`Probe` runs a short fixed prompt once, recording the residual stream, each block's
attention and MLP terms and the arguments each block was called with (to replay one block).
:func:`sublayer_sum` checks that each block's update is its recorded terms and, when it is not,
names the likely cause by replaying the block with terms zeroed (:func:`explain_update`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lenslab.errors import LensLabError
from lenslab.models.adapter import _first_tensor, _replace_first, mixer_kind

PROBE_LEN = 6


def probe_ids(vocab_size: int, offset: int = 0) -> list[int]:
    """A fixed probe of PROBE_LEN ids spread over the vocabulary (no tokenizer needed)."""
    step = max(1, vocab_size // (PROBE_LEN + 3))
    return [(3 + offset + step * (i + 1)) % vocab_size for i in range(PROBE_LEN)]


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance: fp32 round-off of a deep forward, or a few ulps of half types."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 4 * torch.finfo(dtype).eps


def rel_error(a: Tensor, b: Tensor) -> float:
    """max |a - b| relative to the scale of ``b`` (at least 1)."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


class Probe:
    """The probe's clean run (logits, residual stream, recorded sublayer terms, block args)."""

    def __init__(self, adapter, ids: list[int] | None = None):
        self.clean_ids = ids or probe_ids(adapter.vocab_size)
        self.corrupt_ids = probe_ids(adapter.vocab_size, offset=1)
        batch = torch.tensor([self.clean_ids], device=adapter.device)
        self.terms: dict[tuple[str, int], Tensor] = {}
        self.block_args: list[tuple[tuple, dict]] = []
        try:
            states: list[Tensor] = []
            # No cache: the captured block arguments must not carry one (replays append to it).
            with (
                torch.no_grad(),
                record_terms(adapter, self.terms, self.block_args),
                adapter.record_resid(states),
            ):
                self.logits = adapter.model(input_ids=batch, use_cache=False).logits
            self.resid = torch.stack(states)
        except Exception as e:  # noqa: BLE001 - no method can run; say so clearly
            raise LensLabError(
                f"{adapter.name or 'the model'} cannot run the fidelity probe "
                f"({type(e).__name__}: {e})",
                fix="check that the model runs a plain forward (config, dtype, device)",
            ) from e
        want = (adapter.n_layers + 1, 1, len(self.clean_ids), adapter.d_model)
        if tuple(self.resid.shape) != want:
            raise LensLabError(
                f"{adapter.name or 'the model'}: the blocks pass on states of shape "
                f"{tuple(self.resid.shape[1:])}, not [batch, tokens, d_model] "
                f"{want[1:]}: the residual stream has an extra axis no lenslab method reads",
                fix="use a model whose blocks pass on one [batch, tokens, d_model] stream",
            )


class record_terms:  # noqa: N801 - used like a function (a context manager)
    """Record clones of each block's attention and MLP terms (what the residual gains), and
    the arguments the model passes to each block besides the state (to replay one block)."""

    def __init__(self, adapter, store: dict, block_args: list):
        self.adapter, self.store, self.block_args, self.handles = adapter, store, block_args, []

    def __enter__(self):
        ad = self.adapter

        def keep_args(_mod, args, kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            self.block_args.append((args[1:], kwargs))

        for block in ad.blocks:
            self.handles.append(block.register_forward_pre_hook(keep_args, with_kwargs=True))
        for layer in range(ad.n_layers):
            for kind, module in (("attn", ad.attn_term(layer)), ("mlp", ad.mlp_term(layer))):
                self.handles.append(module.register_forward_hook(self._keep((kind, layer))))

    def _keep(self, key):
        def hook(_mod, _args, output):
            out = output[0] if isinstance(output, tuple) else output
            self.store[key] = out.detach().clone()  # clone: some blocks edit it in place

        return hook

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def sublayer_sum(adapter, probe: Probe) -> tuple[float, str]:
    resid, m = probe.resid, adapter.residual_multiplier
    worst, worst_layer = 0.0, -1
    for layer in range(adapter.n_layers):
        update = resid[layer + 1] - resid[layer]
        attn, mlp = _term(probe, "attn", layer, update), _term(probe, "mlp", layer, update)
        err = rel_error(m * (attn + mlp), update)
        if err > worst:
            worst, worst_layer = err, layer
    if worst <= tolerance(adapter.unembed.weight.dtype):
        return worst, ""
    update = resid[worst_layer + 1] - resid[worst_layer]
    attn, mlp = (_term(probe, k, worst_layer, update) for k in ("attn", "mlp"))
    return worst, _sum_cause(adapter, probe, worst_layer, attn, mlp)


def explain_update(adapter, ids: list[int]) -> str:
    """Why the residual stream of ``ids`` is not embeddings + attention + MLP terms (the
    worst block's cause; empty when the sum holds). Direct logit attribution calls it when
    its completeness check fails on a prompt although the gate's probe passed."""
    return sublayer_sum(adapter, Probe(adapter, ids))[1]


def _term(probe: Probe, kind: str, layer: int, like: Tensor) -> Tensor:
    # Some MLPs (OPT's fc2) see tokens flattened to [B*T, D]: view them as [B, T, D].
    return probe.terms[(kind, layer)].reshape(like.shape)


def _sum_cause(adapter, probe: Probe, layer: int, attn: Tensor, mlp: Tensor) -> str:
    """Name the most likely reason why the sublayer terms miss block ``layer``'s update."""
    resid, where = probe.resid, f"block {layer}"
    update = resid[layer + 1] - resid[layer]
    for kind, term in (("attn", attn), ("mlp", mlp)):
        path = getattr(adapter.arch, f"{kind}_out") or getattr(adapter.arch, kind)
        cos = torch.nn.functional.cosine_similarity(
            term.float().flatten(), resid[layer].float().flatten(), dim=0
        )
        if float(cos) > 0.8:
            return (
                f"{where}: the {kind} module at {path!r} returns the residual stream plus its "
                "update (it adds the residual inside, like Bloom's and MPT's modules), so its "
                "output cannot be isolated; map its inner output projection instead"
            )
    try:
        structural, replay = _residual_path_cause(adapter, probe, layer), ""
    except Exception as e:  # noqa: BLE001 - the diagnosis is best effort; the failure stands
        structural, replay = "", f"; replaying the block to say more failed: {type(e).__name__}"
    if structural:
        return f"{where}: {structural}"
    both = (attn + mlp).flatten()
    ratio = float(update.flatten() @ both) / max(float(both @ both), 1e-30)
    # Relative to the update itself: a small block's update must fit as tightly as a big one's.
    gap = float((ratio * both - update.flatten()).abs().max())
    if gap < 1e-3 * max(float(update.abs().max()), 1e-12):
        return (
            f"{where}: the update is {ratio:.4g} x the sublayer terms, a residual multiplier "
            "lenslab does not know"
        )
    post = [n for n, _ in adapter.blocks[layer].named_children() if "post" in n and "norm" in n]
    if post and not (adapter.arch.attn_out or adapter.arch.mlp_out):
        return (
            f"{where}: the block normalises its sublayer outputs before adding them ({post}); "
            "set arch.attn_out / arch.mlp_out to those norms"
        )
    return (
        f"{where}: the residual update is not the recorded attention term plus MLP term "
        f"(a term the map does not name){replay}"
    )


def _residual_path_cause(adapter, probe: Probe, layer: int) -> str:
    """Replay block ``layer`` with its mapped attention and MLP terms zeroed: a residual block
    then returns its input. Whatever it returns instead names the cause: a term from a module
    the map does not name (Falcon-H1's parallel mamba, Gemma 4's per-layer input), a scale on
    the output (a layer scalar), or a residual taken after a norm (post-LN, MiniMax). Empty
    when the residual path is clean."""
    block, x = adapter.blocks[layer], probe.resid[layer]
    # Deviations are measured against the block's update: a small block's missing term is
    # small next to the stream but not next to what the block adds.
    scale = max(float((probe.resid[layer + 1] - x).abs().max()), 1e-12)

    def differs(a: Tensor, b: Tensor) -> bool:
        return float((a - b).abs().max()) / scale > 1e-4

    zeroed = [adapter.attn_term(layer), adapter.mlp_term(layer)]
    out = _replay(adapter, probe, layer, zeroed)
    if not differs(out, x):
        return ""
    scalars = _scalars(block)
    extra = [
        (name, module)
        for name, module in _unmapped_children(adapter, layer)
        if differs(_replay(adapter, probe, layer, [*zeroed, module]), out)
    ]
    if extra:
        names = ", ".join(f"{n!r} ({type(m).__name__})" for n, m in extra)
        mixer = any(mixer_kind(n, m) != "attention" for n, m in extra)
        what, like = (
            ("a parallel mixer", "Falcon-H1's mamba beside its attention")
            if mixer
            else ("a term from module(s)", "Gemma 4's per-layer input")
        )
        return (
            f"the block adds {what} {names} that the map does not name (like {like})"
            + (f", and scales its terms by {', '.join(scalars)}" if scalars else "")
            + ", so its update is not attention term + MLP term"
        )
    ratio = float(out.flatten() @ x.flatten()) / max(float(x.flatten() @ x.flatten()), 1e-30)
    if not differs(ratio * x, out):
        return (
            f"the block scales the residual stream by {ratio:.4g} ({scalars or 'a layer scalar'})"
            ", so its output is not its input plus its terms"
        )
    norms = [n for n, m in block.named_children() if "norm" in type(m).__name__.lower()]
    return (
        "with its attention and MLP terms zeroed the block does not return its input: the "
        f"residual is taken after a norm ({norms}; post-LN, like MiniMax's and OPT-350m's "
        "blocks), so the stream is renormalised inside every block and has no additive split"
    )


def _replay(adapter, probe: Probe, layer: int, zero: list) -> Tensor:
    """Block ``layer`` on its clean input with the outputs of the ``zero`` modules zeroed."""

    def hook(_mod, _args, output):
        return _replace_first(output, torch.zeros_like(_first_tensor(output)))

    handles = [m.register_forward_hook(hook) for m in zero]
    args, kwargs = probe.block_args[layer]
    try:
        with torch.no_grad():
            return _first_tensor(adapter.blocks[layer](probe.resid[layer].clone(), *args, **kwargs))
    finally:
        for handle in handles:
            handle.remove()


def _unmapped_children(adapter, layer: int) -> list:
    """Direct children of a block with parameters that are neither norms nor (inside) a mapped
    module: candidates for a term the map does not name."""
    block = adapter.blocks[layer]
    mapped = [adapter.attn(layer), adapter.mlp(layer), adapter.attn_term(layer)]
    mapped.append(adapter.mlp_term(layer))
    inside = {id(m) for top in mapped for m in top.modules()}
    return [
        (name, child)
        for name, child in block.named_children()
        if id(child) not in inside
        and not any(id(m) in inside for m in child.modules())
        and "norm" not in type(child).__name__.lower()
        and any(True for _ in child.parameters())
    ]


def _scalars(block) -> list[str]:
    """Scalar factors a block applies (attributes or 1-element buffers named like a
    multiplier, scalar or factor) that are not 1."""
    values = dict(vars(block))
    values.update((n, b) for n, b in block.named_buffers(recurse=False) if b.numel() == 1)
    found = []
    for name, value in values.items():
        if isinstance(value, Tensor) and value.numel() == 1:
            value = float(value)
        named = any(k in name for k in ("multiplier", "scalar", "factor"))
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if named and number and value != 1:
            found.append(f"{name}={value:g}")
    return found
