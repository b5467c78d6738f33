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

from lenslab.errors import LensLabError
from lenslab.models.probe import PROBE_LEN, Probe, rel_error, sublayer_sum, tolerance
from lenslab.patching.run import Patch, Patcher

log = logging.getLogger(__name__)

# Every method the gate can rule out, with the identities it needs.
NEEDS: dict[str, tuple[str, ...]] = {
    "lens": ("lens_final",),
    "lens_noaffine": ("lens_final", "norm_form"),
    "tuned_lens": ("lens_final",),
    # the J-lens fit differentiates resid[L] with respect to the recorded states
    "jacobian_lens": ("lens_final", "graph_path"),
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


def run_gate(adapter) -> FidelityReport:
    """Check every identity on the probe; raise when ``lens_final`` fails (the map is wrong)."""
    report = FidelityReport(adapter.name)
    tol = tolerance(adapter.unembed.weight.dtype)
    probe = Probe(adapter)
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


# -- identities: each returns (relative error, likely cause) -------------------------------
def _lens_final(adapter, probe: Probe) -> tuple[float, str]:
    with torch.no_grad():
        lens = adapter.decode(probe.resid[-1])
        bare = adapter.unembed_normed(probe.resid[-1])
    err = rel_error(lens, probe.logits)
    cause = "the adapter's final norm and unembedding do not reproduce the model's logits"
    want, got = probe.logits.float().flatten(), lens.float().flatten()
    ratio = float(want @ got) / max(float(got @ got), 1e-30)
    if rel_error(ratio * got, want) < 1e-3 and abs(ratio - 1) > 1e-3:
        cause = (
            f"the model's logits are {ratio:.4g} x the lens's: it applies a logit multiplier "
            "lenslab does not know (a config key like logit_scale)"
        )
    elif rel_error(bare, probe.logits) < 1e-3:
        cause = (
            f"decoding without a final norm matches: arch.final_norm="
            f"{adapter.arch.final_norm!r} is a module the model does not apply at the end"
        )
    elif adapter.final_norm is None:
        cause = "no final norm is mapped (arch.final_norm), but the model applies one"
    return err, cause


def _norm_form(adapter, probe: Probe) -> tuple[float, str]:
    if adapter.final_norm is None:
        return 0.0, ""
    form = adapter.norm_form(adapter.final_norm)
    x = probe.resid[-1]
    with torch.no_grad():
        err = rel_error(form.apply(x), adapter.final_norm(x))
    return err, (
        f"the final norm {type(adapter.final_norm).__name__} is not gamma * normalise(x) + beta "
        "(LayerNorm or RMSNorm), so its scale cannot be frozen"
    )


def _linear_head(adapter, probe: Probe) -> tuple[float, str]:
    if adapter.softcap:  # tanh: near-linear on a small random model, not on a trained one
        return float("inf"), f"the logits are soft-capped (tanh, cap {adapter.softcap})"
    with torch.no_grad():
        # Scaled up so a nonlinearity that is flat near 0 still shows.
        x = 30 * adapter.normalize(probe.resid[-1])
        a, b = x[:, :2], x[:, 2:4]
        zero = torch.zeros_like(a)
        f = adapter.unembed_normed
        err = rel_error(f(a + b) - f(b), f(a) - f(zero))
    cause = "the logits are not affine in the normed state"
    if adapter.softcap:
        cause = f"the logits are soft-capped (tanh, cap {adapter.softcap})"
    return err, cause


def _sublayer_patch(adapter, probe: Probe) -> tuple[float, str]:
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
    err = rel_error(got, want)
    return err, (
        "restoring every clean attention and MLP output does not give the clean updates: the "
        "update has terms besides them (see sublayer_sum), or a module edits its output in "
        "place after the hook, or adds the residual itself"
    )


def _suffix_patched(adapter, probe: Probe) -> tuple[float, str]:
    patcher = Patcher(adapter, probe.clean_ids, probe.corrupt_ids, runner="full")
    ok, why = patcher.check_suffix()
    return (0.0, "") if ok else (float("inf"), f"the suffix runner is wrong here: {why}")


def _resid_complete(adapter, probe: Probe) -> tuple[float, str]:
    patcher = Patcher(adapter, probe.clean_ids, probe.corrupt_ids, runner="full")
    every = tuple(range(PROBE_LEN))
    patches = [Patch("resid", (j,), every) for j in range(adapter.n_layers)]
    with torch.no_grad():
        got = torch.cat([v for _, v in patcher._run_full(patches, [0] * len(patches), _ident, -1)])
    errors = [rel_error(row, patcher.clean.logits) for row in got]
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


def _head_patch(adapter, probe: Probe) -> tuple[float, str]:
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
    return rel_error(got[:n], got[n:]), (
        "restoring every head's slice of the attention output projection's input does not "
        "restore the attention output: the projection is not the attention's last step, or "
        "the heads' outputs are not its input"
    )


def _ident(x):
    return x


def _graph_path(adapter, probe: Probe) -> tuple[float, str]:
    logits, states = adapter.run_with_resid_graph(probe.clean_ids)
    if len(states) != len(probe.resid):
        return float("inf"), f"the autograd path records {len(states)} states, not L + 1"
    pairs = zip(states, probe.resid, strict=True)
    err = max(rel_error(logits, probe.logits), *(rel_error(s, r) for s, r in pairs))
    return err, "the autograd path (token embeddings as a leaf) does not reproduce the forward"


IDENTITIES: dict[str, Callable] = {
    "lens_final": _lens_final,
    "norm_form": _norm_form,
    "linear_head": _linear_head,
    "sublayer_sum": sublayer_sum,
    "sublayer_patch": _sublayer_patch,
    "suffix_patched": _suffix_patched,
    "graph_path": _graph_path,
    "head_patch": _head_patch,
    "resid_complete": _resid_complete,
}
