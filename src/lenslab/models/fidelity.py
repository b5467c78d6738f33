"""The fidelity gate: before any method runs on a model, check the identities it relies on.

Every method reads the model through the adapter, and each reading rests on an identity that
holds for the architectures lenslab knows and may fail for one it does not (a wrong ``arch:``
path, a logit multiplier, a module that adds the residual itself, an in-place edit). One short
probe run checks them all on a fixed tiny probe (two prompts of ``PROBE_LEN`` tokens):

``lens_final``
    the logit lens at layer L is the model's logits (``decode(resid[L]) == logits``). Every
    method needs it; a failure is raised at load (the map itself is wrong).
``norm_form``
    the final norm is ``gamma * normalise(x) + beta`` (LayerNorm or RMSNorm, frozen-scale
    decomposable). The logit lens without affine and direct logit attribution need it.
``linear_head``
    after the final norm the logits are affine in the normed state (no soft-capping): DLA.
``sublayer_sum``
    each block's update ``resid[l+1] - resid[l]`` is ``m * (attn term + mlp term)``, the
    recorded sublayer terms (``m`` the residual multiplier): DLA and attn/mlp patching.
``sublayer_patch``
    restoring every clean attention and MLP output into the corrupted run gives the corrupted
    embeddings plus the clean updates (the patching hooks see what they claim): attn/mlp
    patching.
``suffix_patched``
    the fast suffix runner equals the full hooked forward on *patched* runs, not only on the
    clean replay. A failure only switches patching to the full runner.
``resid_complete``
    restoring every position's clean residual stream after block ``l`` into the corrupted run
    gives the clean logits, for every ``l``: what residual patching reads ("restoring the
    residual at layer l restores everything after it"). Gemma 4 with shared key/value layers
    or per-layer inputs breaks it (later blocks read keys/values or inputs computed before
    the patch): residual patching and attribution patching are ruled out there.
``head_patch``
    restoring every head's slice of the attention output projection's input, at every
    position, gives the same run as restoring the whole attention output (the head split
    sees what the attention module computes from): head patching and attribution patching.
``graph_path``
    the autograd path (F14, F15) gives the forward's logits and residual states.

A failed identity becomes a :class:`~lenslab.errors.LensLabError` naming it, the likely cause
and the methods it rules out; ``adapter.available(method)`` / ``adapter.require(method)`` read
the report, and the pipeline skips a ruled-out method for that model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lenslab.errors import LensLabError
from lenslab.models.adapter import _first_tensor, _replace_first, mixer_kind

log = logging.getLogger(__name__)

PROBE_LEN = 6
# Every method the gate can rule out, with the identities it needs.
NEEDS: dict[str, tuple[str, ...]] = {
    "lens": ("lens_final",),
    "lens_noaffine": ("lens_final", "norm_form"),
    "tuned_lens": ("lens_final",),
    "dla": ("lens_final", "norm_form", "linear_head", "sublayer_sum"),
    "patch_resid": ("lens_final", "resid_complete"),
    "patch_attn": ("lens_final", "sublayer_sum", "sublayer_patch"),
    "patch_mlp": ("lens_final", "sublayer_sum", "sublayer_patch"),
    "patch_head": ("lens_final", "head_patch"),
    "atp": ("lens_final", "resid_complete", "sublayer_sum", "head_patch"),
    "patch_suffix": ("lens_final", "suffix_patched"),
    "visibility": ("lens_final", "graph_path"),
    "iterative": ("lens_final", "graph_path"),
}
METHODS = tuple(NEEDS)
# Methods of the figures a study builds (patch_suffix is only a faster runner).
USER_METHODS = tuple(m for m in METHODS if m != "patch_suffix")


@dataclass(frozen=True)
class Check:
    """The outcome of one identity on the probe."""

    name: str
    ok: bool
    error: float = 0.0  # the largest deviation seen, relative to the values' scale
    cause: str = ""  # the likely cause, for a failure

    def rules_out(self) -> tuple[str, ...]:
        return tuple(m for m, needs in NEEDS.items() if self.name in needs)


@dataclass
class FidelityReport:
    """The checks of one model; answers which methods are available."""

    model: str
    checks: dict[str, Check] = field(default_factory=dict)

    def failure(self, method: str) -> LensLabError | None:
        """The error that rules ``method`` out, or None when it is available."""
        if method not in NEEDS:
            raise LensLabError(f"unknown method {method!r}", fix=f"use one of {list(METHODS)}")
        for name in NEEDS[method]:
            check = self.checks.get(name)
            if check is not None and not check.ok:
                return gate_error(self.model, check, method)
        return None

    def available(self, method: str) -> bool:
        return self.failure(method) is None

    def require(self, method: str) -> None:
        err = self.failure(method)
        if err is not None:
            raise err

    def methods(self) -> dict[str, bool]:
        return {m: self.available(m) for m in METHODS}

    def reasons(self) -> dict[str, str]:
        """``{method: reason}`` for every ruled-out method (for skip notes)."""
        return {m: str(self.failure(m)) for m in METHODS if not self.available(m)}


def gate_error(model: str, check: Check, method: str | None = None) -> LensLabError:
    ruled = ", ".join(check.rules_out())
    what = f"{method} is ruled out for {model or 'this model'}: " if method else ""
    return LensLabError(
        f"{what}fidelity identity {check.name!r} fails (off by {check.error:.3g}): "
        f"{check.cause}; this rules out {ruled}",
        fix=_FIXES.get(check.name, "skip these methods for this model"),
    )


_FIXES = {
    "lens_final": "check the `arch:` block of the model config (final_norm, post_norm) against "
    "the model's modules, or report the family so its map can be added",
    "norm_form": "use the logit lens with its affine; direct logit attribution cannot run here",
    "linear_head": "skip direct logit attribution for this model",
    "sublayer_sum": "map the modules whose outputs are added to the residual stream with "
    "`arch: {attn: ..., mlp: ..., attn_out: ..., mlp_out: ...}`, or skip DLA and attn/mlp "
    "patching for this model (resid patching is unaffected)",
    "sublayer_patch": "map attn/mlp to modules that do not add the residual or edit their "
    "outputs in place, or patch only `resid` for this model",
    "suffix_patched": "patching falls back to the full runner (runner: auto or full)",
    "graph_path": "skip F14/F15 for this model",
    "head_patch": "patch whole attention outputs (kind attn) for this model",
    "resid_complete": "patch attention and MLP outputs (kinds attn, mlp) instead of the "
    "residual stream for this model; attribution patching cannot run here",
}


def probe_ids(vocab_size: int, offset: int = 0) -> list[int]:
    """A fixed probe of PROBE_LEN ids spread over the vocabulary (no tokenizer needed)."""
    step = max(1, vocab_size // (PROBE_LEN + 3))
    return [(3 + offset + step * (i + 1)) % vocab_size for i in range(PROBE_LEN)]


def _tol(dtype: torch.dtype) -> float:
    """Relative tolerance: fp32 round-off of a deep forward, or a few ulps of half types."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 4 * torch.finfo(dtype).eps


def _rel(a: Tensor, b: Tensor) -> float:
    """max |a - b| relative to the scale of ``b`` (at least 1)."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def run_gate(adapter) -> FidelityReport:
    """Check every identity on the probe; raise when ``lens_final`` fails (the map is wrong)."""
    report = FidelityReport(adapter.name)
    tol = _tol(adapter.unembed.weight.dtype)
    probe = _Probe(adapter)
    for name, fn in IDENTITIES.items():
        try:
            err, cause = fn(adapter, probe)
        except LensLabError as e:
            err, cause = float("inf"), e.problem
        except Exception as e:  # noqa: BLE001 - a crash is a failed identity, named below
            err, cause = float("inf"), f"the check crashed ({type(e).__name__}: {e})"
        ok = err <= tol
        report.checks[name] = Check(name, ok, err, "" if ok else cause)
        if not ok and name == "lens_final":
            raise gate_error(adapter.name, report.checks[name])
    bad = {m: r for m, r in report.reasons().items() if m in USER_METHODS}
    if bad:
        log.warning("%s: fidelity gate rules out %s", adapter.name, sorted(bad))
    return report


class _Probe:
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
                _record_terms(adapter, self.terms, self.block_args),
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


class _record_terms:  # noqa: N801 - used like a function (a context manager)
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


# -- identities: each returns (relative error, likely cause) -------------------------------
def _lens_final(adapter, probe: _Probe) -> tuple[float, str]:
    with torch.no_grad():
        lens = adapter.decode(probe.resid[-1])
        bare = adapter.unembed_normed(probe.resid[-1])
    err = _rel(lens, probe.logits)
    cause = "the adapter's final norm and unembedding do not reproduce the model's logits"
    want, got = probe.logits.float().flatten(), lens.float().flatten()
    ratio = float(want @ got) / max(float(got @ got), 1e-30)
    if _rel(ratio * got, want) < 1e-3 and abs(ratio - 1) > 1e-3:
        cause = (
            f"the model's logits are {ratio:.4g} x the lens's: it applies a logit multiplier "
            "lenslab does not know (a config key like logit_scale)"
        )
    elif _rel(bare, probe.logits) < 1e-3:
        cause = (
            f"decoding without a final norm matches: arch.final_norm="
            f"{adapter.arch.final_norm!r} is a module the model does not apply at the end"
        )
    elif adapter.final_norm is None:
        cause = "no final norm is mapped (arch.final_norm), but the model applies one"
    return err, cause


def _norm_form(adapter, probe: _Probe) -> tuple[float, str]:
    if adapter.final_norm is None:
        return 0.0, ""
    form = adapter.norm_form(adapter.final_norm)
    x = probe.resid[-1]
    with torch.no_grad():
        err = _rel(form.apply(x), adapter.final_norm(x))
    return err, (
        f"the final norm {type(adapter.final_norm).__name__} is not gamma * normalise(x) + beta "
        "(LayerNorm or RMSNorm), so its scale cannot be frozen"
    )


def _linear_head(adapter, probe: _Probe) -> tuple[float, str]:
    if adapter.softcap:  # tanh: near-linear on a small random model, not on a trained one
        return float("inf"), f"the logits are soft-capped (tanh, cap {adapter.softcap})"
    with torch.no_grad():
        # Scaled up so a nonlinearity that is flat near 0 still shows.
        x = 30 * adapter.normalize(probe.resid[-1])
        a, b = x[:, :2], x[:, 2:4]
        zero = torch.zeros_like(a)
        f = adapter.unembed_normed
        err = _rel(f(a + b) - f(b), f(a) - f(zero))
    cause = "the logits are not affine in the normed state"
    if adapter.softcap:
        cause = f"the logits are soft-capped (tanh, cap {adapter.softcap})"
    return err, cause


def _sublayer_sum(adapter, probe: _Probe) -> tuple[float, str]:
    resid, m = probe.resid, adapter.residual_multiplier
    worst, worst_layer = 0.0, -1
    for layer in range(adapter.n_layers):
        update = resid[layer + 1] - resid[layer]
        attn, mlp = _term(probe, "attn", layer, update), _term(probe, "mlp", layer, update)
        err = _rel(m * (attn + mlp), update)
        if err > worst:
            worst, worst_layer = err, layer
    if worst <= _tol(adapter.unembed.weight.dtype):
        return worst, ""
    update = resid[worst_layer + 1] - resid[worst_layer]
    attn, mlp = (_term(probe, k, worst_layer, update) for k in ("attn", "mlp"))
    return worst, _sum_cause(adapter, probe, worst_layer, attn, mlp)


def explain_update(adapter, ids: list[int]) -> str:
    """Why the residual stream of ``ids`` is not embeddings + attention + MLP terms (the
    worst block's cause; empty when the sum holds). Direct logit attribution calls it when
    its completeness check fails on a prompt although the gate's probe passed."""
    return _sublayer_sum(adapter, _Probe(adapter, ids))[1]


def _term(probe: _Probe, kind: str, layer: int, like: Tensor) -> Tensor:
    # Some MLPs (OPT's fc2) see tokens flattened to [B*T, D]: view them as [B, T, D].
    return probe.terms[(kind, layer)].reshape(like.shape)


def _sum_cause(adapter, probe: _Probe, layer: int, attn: Tensor, mlp: Tensor) -> str:
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


def _residual_path_cause(adapter, probe: _Probe, layer: int) -> str:
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


def _replay(adapter, probe: _Probe, layer: int, zero: list) -> Tensor:
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


def _sublayer_patch(adapter, probe: _Probe) -> tuple[float, str]:
    from lenslab.patching.run import Patch, Patcher  # patching builds on the adapter

    patcher = Patcher(adapter, probe.clean_ids, probe.corrupt_ids, runner="full")
    every, positions = tuple(range(adapter.n_layers)), tuple(range(PROBE_LEN))
    # One row restoring both kinds everywhere: the union of two single-kind indexes.
    index = {
        **patcher._index([Patch("attn", every, positions)]),
        **patcher._index([Patch("mlp", every, positions)]),
    }
    with torch.no_grad(), patcher._component_hooks(index, range(adapter.n_layers)):
        got = adapter.model(input_ids=patcher.corrupt_ids[None], use_cache=False).logits[0, -1]
        c, k = patcher.corrupt[0].resid, patcher.clean.resid
        want = adapter.decode(c[0, -1] + k[-1, -1] - k[0, -1])
    err = _rel(got, want)
    return err, (
        "restoring every clean attention and MLP output does not give the clean updates: the "
        "update has terms besides them (see sublayer_sum), or a module edits its output in "
        "place after the hook, or adds the residual itself"
    )


def _suffix_patched(adapter, probe: _Probe) -> tuple[float, str]:
    from lenslab.patching.run import Patcher  # patching builds on the adapter

    patcher = Patcher(adapter, probe.clean_ids, probe.corrupt_ids, runner="full")
    ok, why = patcher.check_suffix()
    return (0.0, "") if ok else (float("inf"), f"the suffix runner is wrong here: {why}")


def _resid_complete(adapter, probe: _Probe) -> tuple[float, str]:
    from lenslab.patching.run import Patch, Patcher  # patching builds on the adapter

    patcher = Patcher(adapter, probe.clean_ids, probe.corrupt_ids, runner="full")
    every = tuple(range(PROBE_LEN))
    patches = [Patch("resid", (j,), every) for j in range(adapter.n_layers)]
    with torch.no_grad():
        got = torch.cat([v for _, v in patcher._run_full(patches, [0] * len(patches), _ident, -1)])
    errors = [_rel(row, patcher.clean.logits) for row in got]
    worst = max(range(len(errors)), key=errors.__getitem__)
    return errors[worst], (
        f"restoring every position's residual stream after block {worst} does not give the "
        f"clean logits{_resid_cause(adapter)}, so a residual patch does not restore everything "
        "after it"
    )


def _resid_cause(adapter) -> str:
    """The config keys that make later blocks read state from before the patch, if any."""
    cfg = adapter.model.config
    keys = [
        f"{key}={getattr(cfg, key)}"
        for key in ("num_kv_shared_layers", "hidden_size_per_layer_input")
        if isinstance(getattr(cfg, key, None), int) and getattr(cfg, key) > 0
    ]
    if not keys:
        return ""
    return (
        f": later blocks read keys/values or per-layer inputs computed outside the residual "
        f"stream ({', '.join(keys)}; {getattr(cfg, 'model_type', '?')})"
    )


def _head_patch(adapter, probe: _Probe) -> tuple[float, str]:
    from lenslab.patching.run import Patch, Patcher  # patching builds on the adapter

    patcher = Patcher(adapter, probe.clean_ids, probe.corrupt_ids, runner="full")
    if not patcher.head_splits:
        return float("inf"), "no block has an attention output projection that splits into heads"
    every = tuple(range(PROBE_LEN))
    heads = tuple(range(adapter.n_heads()))
    patches = [Patch("head", (j,), every, heads) for j in patcher.head_splits]
    patches += [Patch("attn", (j,), every) for j in patcher.head_splits]
    with torch.no_grad():
        got = torch.cat([v for _, v in patcher._run_full(patches, [0] * len(patches), _ident, -1)])
    n = len(patcher.head_splits)
    return _rel(got[:n], got[n:]), (
        "restoring every head's slice of the attention output projection's input does not "
        "restore the attention output: the projection is not the attention's last step, or "
        "the heads' outputs are not its input"
    )


def _ident(x: Tensor) -> Tensor:
    return x


def _graph_path(adapter, probe: _Probe) -> tuple[float, str]:
    logits, states = adapter.run_with_resid_graph(probe.clean_ids)
    if len(states) != len(probe.resid):
        return float("inf"), f"the autograd path records {len(states)} states, not L + 1"
    pairs = zip(states, probe.resid, strict=True)
    err = max(_rel(logits, probe.logits), *(_rel(s, r) for s, r in pairs))
    return err, "the autograd path (token embeddings as a leaf) does not reproduce the forward"


IDENTITIES: dict[str, Callable] = {
    "lens_final": _lens_final,
    "norm_form": _norm_form,
    "linear_head": _linear_head,
    "sublayer_sum": _sublayer_sum,
    "sublayer_patch": _sublayer_patch,
    "suffix_patched": _suffix_patched,
    "graph_path": _graph_path,
    "head_patch": _head_patch,
    "resid_complete": _resid_complete,
}
