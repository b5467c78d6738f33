"""The Jacobian lens (J-lens; Gurnee et al. 2026, "Verbalizable Representations Form a Global
Workspace in Language Models").

One ``d_model x d_model`` matrix per residual state ``l``::

    J_l = E_prompt[ 1/|V| sum_{t in V} sum_{t' in V, t' >= t} d h_final,t' / d h_l,t ]

``h_final`` is ``resid[L]`` (the last block's output, before the final norm); ``V`` are the
valid positions: the first ``skip_first`` positions (attention sinks) and, with ``skip_last``,
the last one are left out. The readout is ``W_U norm(J_l h_l)`` with the model's own decoder;
``J_l = I`` is the logit lens, and ``J_L = I`` by definition.

Layer numbering. lenslab's ``resid[r]``, ``r = 0..L``: ``resid[0]`` is block 0's input (the
embeddings), ``resid[r]`` the output of block ``r - 1``. The reference artifact (anthropics/
jacobian-lens, TransformerLens 4.x) keys its matrices by *block output* ``b = 0..L-2``, i.e.
``resid[b + 1]``; ``resid[L]`` (block ``L - 1``) is the identity and not stored. lenslab also
fits ``resid[0]`` (one more block to differentiate through) and stores it under the extra
top-level key ``J_embed``, which the reference loaders ignore. A published artifact has no
``J_embed``: lenslab then reads ``resid[0]`` with the logit lens, and says so in
:attr:`JacobianLens.description`.

Fitting (:func:`fit_jacobian`). Per prompt: one forward pass with the prompt replicated
``dim_batch`` times, stopped after the last block (no final norm or unembedding), then
``ceil(d / dim_batch)`` backward passes; pass ``k`` puts the one-hot cotangent ``e_i`` of copy
``i`` on *every* valid position at once, so by causality the gradient at source ``t`` is the
sum over targets ``t' >= t``. The last position, with ``skip_last``, is neither source nor
target, and causality lets the forward drop it. Parameters are frozen during the fit, so only
gradients with respect to the residual states are computed. Running sums per layer (float64)
and the prompt count make merging exact (:meth:`JacobianFit.merge`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lenslab.errors import LensLabError
from lenslab.io import atomic_path
from lenslab.lenses.base import Lens
from lenslab.models.adapter import ModelAdapter, output_cache

ARTIFACT_FILE = "lens.pt"  # in results/jacobian_lens/<model>/
EMBED_KEY = "J_embed"  # lenslab's extra key: J of resid[0]; reference loaders ignore it
METHOD = "jacobian_lens"  # the fidelity gate's name for it
STORE_DTYPE = torch.float16  # the reference format's storage dtype
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSettings:
    """How the J-lens is estimated. Defaults are the reference implementation's, except
    ``fit_embeddings`` (lenslab's extra ``resid[0]``) and ``dim_batch``."""

    skip_first: int = 16  # leading positions left out (attention sinks)
    skip_last: bool = True  # the last position has no next-token target
    dim_batch: int = 8  # one-hot cotangents (output directions) per backward pass
    fit_embeddings: bool = True  # also fit resid[0] (else resid[0] is read as the logit lens)
    # Run the skipped leading positions once into a key/value cache and differentiate only the
    # rest (same J, fewer FLOPs). fit_jacobian checks it on the first prompt and falls back to
    # the full forward for a model whose cached run differs.
    prefix_cache: bool = True

    def __post_init__(self) -> None:
        if self.skip_first < 0 or self.dim_batch < 1:
            raise LensLabError(
                f"J-lens fit: skip_first={self.skip_first}, dim_batch={self.dim_batch}",
                fix="use skip_first >= 0 and dim_batch >= 1",
            )

    def valid(self, n_tokens: int) -> range:
        """The valid (source and target) positions of a prompt of ``n_tokens`` tokens."""
        return range(self.skip_first, n_tokens - 1 if self.skip_last else n_tokens)


def source_states(n_layers: int, fit_embeddings: bool) -> list[int]:
    """The residual states a fit estimates: ``resid[1..L-1]`` (+ ``resid[0]``)."""
    return list(range(0 if fit_embeddings else 1, n_layers))


def resid_to_block(resid: int) -> int:
    """lenslab's ``resid[r]`` is the reference artifact's block output ``r - 1``."""
    return resid - 1


def block_to_resid(block: int) -> int:
    return block + 1


def prompts_digest(prompts: Sequence[Sequence[int]]) -> str:
    """A fingerprint of the token ids fitted on (order matters: it also guards resuming)."""
    h = hashlib.sha256()
    for ids in prompts:
        h.update(torch.as_tensor(list(ids), dtype=torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


# -- running sums ---------------------------------------------------------------------------
@dataclass
class JacobianFit:
    """Per-layer sums of per-prompt Jacobians and the prompt count (merges exactly)."""

    sums: dict[int, Tensor]  # resid index -> [d, d] float64
    n_prompts: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, layers: Sequence[int], d_model: int, metadata: dict | None = None):
        sums = {r: torch.zeros(d_model, d_model, dtype=torch.float64) for r in layers}
        return cls(sums, 0, dict(metadata or {}))

    def add(self, per_prompt: dict[int, Tensor]) -> None:
        for r, matrix in per_prompt.items():
            self.sums[r] += matrix.to(torch.float64).cpu()
        self.n_prompts += 1

    def merge(self, other: JacobianFit) -> JacobianFit:
        """The fit of both prompt sets: sums add, counts add (exact up to float64 rounding)."""
        if sorted(self.sums) != sorted(other.sums):
            raise LensLabError(
                f"cannot merge J-lens fits of states {sorted(self.sums)} and {sorted(other.sums)}",
                fix="fit both halves with the same fit_embeddings setting and model",
            )
        shapes = {tuple(m.shape) for m in (*self.sums.values(), *other.sums.values())}
        if len(shapes) != 1:
            raise LensLabError(f"J-lens fits of widths {shapes}", fix="merge fits of one model")
        keep = _settings_of(self.metadata)
        if keep != _settings_of(other.metadata):
            raise LensLabError(
                "the J-lens fits differ in model or settings: merging them would mix estimators",
                fix="merge only fits of one model with the same skip and dtype settings",
            )
        sums = {r: self.sums[r] + other.sums[r] for r in self.sums}
        tokens = self.metadata.get("prompt_tokens", 0) + other.metadata.get("prompt_tokens", 0)
        meta = {**keep, "prompt_tokens": tokens, "merged_digests": _digests(self) + _digests(other)}
        return JacobianFit(sums, self.n_prompts + other.n_prompts, meta)

    def means(self) -> dict[int, Tensor]:
        if self.n_prompts == 0:
            raise LensLabError("the J-lens fit has no prompts", fix="fit on at least one prompt")
        return {r: (s / self.n_prompts).float() for r, s in self.sums.items()}

    def lens(self, adapter: ModelAdapter) -> JacobianLens:
        meta = {**self.metadata, "n_prompts": self.n_prompts}
        return JacobianLens(adapter, self.means(), self.n_prompts, meta)

    # checkpoint: the sums themselves (float64), so a resumed fit is the uninterrupted one.
    # Keyed by resid index under lenslab's own names: the reference checkpoint's keys
    # (jacobian_sum, n_done) would make TransformerLens read them as block indices, one off.
    def save(self, path: str | Path, next_index: int) -> None:
        state = {
            "lenslab_resid_sums": {int(r): s for r, s in self.sums.items()},
            "n_prompts": self.n_prompts,
            "next_index": int(next_index),
            "metadata": self.metadata,
        }
        _save_bytes(state, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[JacobianFit, int]:
        state = _torch_load(Path(path))
        if "lenslab_resid_sums" not in state:
            raise LensLabError(f"{path} is not a lenslab J-lens checkpoint", fix="delete it")
        sums = {int(r): s.to(torch.float64) for r, s in state["lenslab_resid_sums"].items()}
        fit = cls(sums, int(state["n_prompts"]), dict(state.get("metadata") or {}))
        return fit, int(state["next_index"])


_PER_SLICE = ("prompts_digest", "prompt_tokens", "merged_digests", "n_prompts")


def _settings_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata two fits must share to be merged (all but what describes the slice)."""
    return {k: v for k, v in metadata.items() if k not in _PER_SLICE}


def _digests(fit: JacobianFit) -> list:
    return list(fit.metadata.get("merged_digests") or [fit.metadata.get("prompts_digest")])


# -- fitting --------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by the last block's hook: the fit needs no final norm or unembedding."""


@contextlib.contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """Freeze parameters (no weight gradients, fewer saved tensors); restore the flags after."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _states_with_graph(adapter: ModelAdapter, ids: Tensor, prefix: int = 0) -> list[Tensor]:
    """``resid[0..L]`` ([B, T - prefix, D] each) of ``ids`` inside the autograd graph; the
    forward stops after the last block. The token-embedding output is the graph's root (weights
    frozen). With ``prefix``, the first ``prefix`` positions run first without a graph into a
    key/value cache, and only the rest is differentiated: exact, since by causality no source
    at or after ``prefix`` changes anything before it."""
    kwargs: dict[str, Any] = {}
    if prefix:
        with torch.no_grad():
            out = adapter.model(input_ids=ids[:, :prefix], use_cache=True)
        kwargs["cache"] = output_cache(out)
        ids = ids[:, prefix:]
    states: list[Tensor] = []

    def root(_mod, _args, output):
        return output.detach().requires_grad_(True)

    def stop(_mod, _args, output):
        raise _Stop

    handles = [adapter.model.get_input_embeddings().register_forward_hook(root)]
    try:
        with torch.enable_grad(), adapter.record_resid(states):
            # registered after record_resid's hooks, so the last state is recorded first
            handles.append(adapter.blocks[-1].register_forward_hook(stop))
            adapter.model(input_ids=ids, use_cache=bool(prefix), **kwargs)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if len(states) != adapter.n_layers + 1:
        raise LensLabError(
            f"the J-lens fit saw {len(states)} residual states, expected {adapter.n_layers + 1}",
            fix="the block hooks did not fire once per block: check the model's arch map",
        )
    return states


def prompt_jacobian(
    adapter: ModelAdapter,
    ids: Sequence[int],
    settings: FitSettings,
    layers: Sequence[int] | None = None,
) -> dict[int, Tensor]:
    """One prompt's ``{resid index: [d, d]}``: row ``i`` of ``J_l`` is the mean over sources
    ``t in V`` of the gradient of ``sum_{t' in V} h_final,t'[i]`` with respect to ``h_l,t``.
    ``layers`` defaults to :func:`source_states`; ``L`` itself (the identity) is allowed."""
    n = len(ids)
    valid = settings.valid(n)
    if len(valid) == 0:
        last = " and the last" if settings.skip_last else ""
        raise LensLabError(
            f"a prompt of {n} tokens has no valid position (the first {settings.skip_first}"
            f"{last} are skipped)",
            fix=f"use prompts of more than {settings.skip_first + int(settings.skip_last)} tokens "
            "or lower jacobian_lens.fit.skip_first",
        )
    keep = valid.stop  # causality: positions after the last valid one change nothing before it
    d, b = adapter.d_model, settings.dim_batch
    layers = list(layers or source_states(adapter.n_layers, settings.fit_embeddings))
    ids_t = torch.tensor([list(ids[:keep])], device=adapter.device).expand(min(b, d), -1)
    prefix = valid.start if settings.prefix_cache else 0  # positions before V: no graph
    states = _states_with_graph(adapter, ids_t, prefix)
    first = valid.start - prefix  # the first valid position in the differentiated part
    target, sources = states[-1], [states[r] for r in layers]
    out = {r: torch.empty(d, d, dtype=torch.float32, device=target.device) for r in layers}
    n_pass = -(-d // b)
    rows = torch.arange(min(b, d), device=target.device)
    cot = torch.zeros_like(target)
    for k in range(n_pass):
        start, width = k * b, min(b, d - k * b)
        cot.zero_()
        cot[rows[:width], first:, start + rows[:width]] = 1.0
        grads = torch.autograd.grad(target, sources, cot, retain_graph=k < n_pass - 1)
        for r, g in zip(layers, grads, strict=True):
            out[r][start : start + width] = g[:width, first:].float().mean(1)
    return out


def fit_jacobian(
    adapter: ModelAdapter,
    prompts: Sequence[Sequence[int]],
    settings: FitSettings | None = None,
    *,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> JacobianFit:
    """Fit the J-lens on ``prompts`` (token-id lists). With ``checkpoint``, the running sums are
    saved every ``checkpoint_every`` prompts and a matching checkpoint is resumed from."""
    settings = settings or FitSettings()
    adapter.require(METHOD)
    for i, ids in enumerate(prompts):
        if len(settings.valid(len(ids))) == 0:
            raise LensLabError(
                f"prompt {i} has {len(ids)} tokens: no valid position with skip_first="
                f"{settings.skip_first}" + (" and the last skipped" if settings.skip_last else ""),
                fix=f"use prompts of more than {settings.skip_first + int(settings.skip_last)} "
                "tokens or lower jacobian_lens.fit.skip_first",
            )
    if settings.prefix_cache and settings.skip_first and prompts:
        settings = _check_prefix_cache(adapter, prompts[0], settings)
    meta = fit_metadata(adapter, prompts, settings, metadata)
    layers = source_states(adapter.n_layers, settings.fit_embeddings)
    fit, start = JacobianFit.empty(layers, adapter.d_model, meta), 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.is_file():
        try:
            saved, index = JacobianFit.load(ckpt)
        except LensLabError as err:  # a damaged checkpoint is only a lost shortcut
            log.warning("ignoring the J-lens checkpoint: %s", err)
        else:
            if saved.metadata == meta and sorted(saved.sums) == layers:
                fit, start = saved, index
    bar = tqdm(total=len(prompts), initial=start, desc="fit J-lens", disable=not progress)
    with _frozen(adapter.model):
        for i in range(start, len(prompts)):
            fit.add(prompt_jacobian(adapter, prompts[i], settings))
            bar.update()
            if ckpt is not None and checkpoint_every and (i + 1) % checkpoint_every == 0:
                fit.save(ckpt, i + 1)
    bar.close()
    return fit


def _check_prefix_cache(
    adapter: ModelAdapter, ids: Sequence[int], settings: FitSettings
) -> FitSettings:
    """Settings with ``prefix_cache`` off when the cached run's states differ from the full
    forward's on ``ids`` (a model whose cache is not causal-exact); else unchanged."""
    ids_t = torch.tensor([list(ids)], device=adapter.device)
    s = settings.skip_first
    with torch.no_grad():
        _, full = adapter.run_with_resid(ids_t)
        try:
            cached = torch.stack(_states_with_graph(adapter, ids_t, s))
        except Exception:  # noqa: BLE001 - any failure of the cached run means: do not use it
            cached = None
    if cached is not None and cached.shape == full[:, :, s:].shape:
        scale = max(float(full.abs().max()), 1.0)
        if float((cached - full[:, :, s:]).abs().max()) <= 1e-4 * scale:
            return settings
    log.warning(
        "%s: the cached prefix run differs; the J-lens fit runs whole prompts", adapter.name
    )
    return replace(settings, prefix_cache=False)


def fit_metadata(
    adapter: ModelAdapter,
    prompts: Sequence[Sequence[int]],
    settings: FitSettings,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Provenance: model, prompts, skip settings, dtype (plain types: weights_only loadable)."""
    config = getattr(adapter.model, "config", None)
    hub_id = str(getattr(config, "_name_or_path", "") or "")
    # TransformerLens checks model_name against the id it booted: a hub id is kept, a local
    # path (the embedded model's) is left out, as results hold no absolute paths
    local = not hub_id or hub_id.startswith(("/", ".", "~")) or Path(hub_id).exists()
    return {
        "estimator": METHOD,
        "fitted_by": "lenslab",
        "lenslab_model": adapter.name,
        **({} if local else {"model_name": hub_id}),
        "model_revision": getattr(config, "_commit_hash", None),
        "n_layers": adapter.n_layers,
        "target_layer": adapter.n_layers - 1,  # reference numbering: the last block's output
        "prompts_digest": prompts_digest(prompts),
        "prompt_tokens": sum(len(p) for p in prompts),
        "fit_dtype": str(next(adapter.model.parameters()).dtype).removeprefix("torch."),
        "skip_first_positions": settings.skip_first,
        "skip_last_position": settings.skip_last,
        "fit_embeddings": settings.fit_embeddings,
        **(extra or {}),
    }


# -- the lens -------------------------------------------------------------------------------
class JacobianLens(Lens):
    """``transform(h, l) = J_l h`` (identity at ``l = L``, and at ``l = 0`` without ``J_embed``)."""

    name = "jacobian"

    def __init__(
        self,
        adapter: ModelAdapter,
        jacobians: dict[int, Tensor],
        n_prompts: int,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(adapter, affine=True)
        adapter.require(METHOD)
        d, n = adapter.d_model, adapter.n_layers
        for r, matrix in jacobians.items():
            if not 0 <= r < n or tuple(matrix.shape) != (d, d):
                raise LensLabError(
                    f"J-lens matrix for resid[{r}] of shape {tuple(matrix.shape)} does not fit "
                    f"{adapter.name or 'this model'} (resid[0..{n - 1}] of [{d}, {d}])",
                    fix="use a lens fitted for this model",
                )
        self.matrices = {
            int(r): m.detach().float().to(adapter.device) for r, m in jacobians.items()
        }
        self.n_prompts = int(n_prompts)
        self.metadata = dict(metadata or {})

    @property
    def description(self) -> str:
        zero = "J fitted" if 0 in self.matrices else "logit lens (no J_embed in the artifact)"
        return (
            f"Jacobian lens (J-lens): W_U norm(J_l h_l), J_l the mean Jacobian of the last block's "
            f"output over {self.n_prompts} prompts; resid[0]: {zero}; resid[L]: identity"
        )

    def transform(self, h: Tensor, layer: int) -> Tensor:
        layer = self.adapter.check_layer(layer)
        matrix = self.matrices.get(layer)
        if matrix is None:
            if layer in (0, self.adapter.n_layers):
                return h
            raise LensLabError(
                f"the J-lens has no matrix for resid[{layer}] (fitted: {sorted(self.matrices)})",
                fix="refit it over every layer",
            )
        return (h.float() @ matrix.T).to(h.dtype)

    # -- files: the reference artifact format ---------------------------------------------------
    def artifact(self) -> dict[str, Any]:
        blocks = {resid_to_block(r): m for r, m in self.matrices.items() if r >= 1}
        payload: dict[str, Any] = {
            "J": {b: m.cpu().to(STORE_DTYPE) for b, m in sorted(blocks.items())},
            "n_prompts": self.n_prompts,
            "source_layers": sorted(blocks),
            "d_model": self.adapter.d_model,
            "metadata": self.metadata,
        }
        if 0 in self.matrices:
            payload[EMBED_KEY] = self.matrices[0].cpu().to(STORE_DTYPE)
        return payload

    def save(self, path: str | Path) -> None:
        """Write the reference format (J in float16); loads in TransformerLens's JacobianLens."""
        _save_bytes(self.artifact(), path)

    @classmethod
    def load(cls, path: str | Path, adapter: ModelAdapter) -> JacobianLens:
        """Read a reference-format artifact (lenslab's or a published one), checked against
        the model's width and depth."""
        path = Path(path)
        payload = _torch_load(path)
        missing = [k for k in ("J", "d_model") if k not in payload]
        if missing:
            raise LensLabError(
                f"{path} lacks {missing}: not a J-lens artifact (keys {sorted(payload)[:8]})",
                fix="point to a file written by JacobianLens.save, TransformerLens or "
                "anthropics/jacobian-lens",
            )
        model = adapter.name or "this model"
        meta = dict(payload.get("metadata") or {})
        fitted_for = meta.get("lenslab_model") or meta.get("model_name") or "another model"
        fix = f"use a J-lens fitted for {model} (this one was fitted for {fitted_for!r}) or refit"
        if int(payload["d_model"]) != adapter.d_model:
            raise LensLabError(
                f"J-lens d_model={payload['d_model']} does not match {model} "
                f"(d_model={adapter.d_model})",
                fix=fix,
            )
        blocks = sorted(int(b) for b in payload["J"])
        last = adapter.n_layers - 2  # the last source block; block L-1 is the identity
        depth = meta.get("n_layers")
        if (blocks and not 0 <= blocks[0] <= blocks[-1] <= last) or (
            depth is not None and int(depth) != adapter.n_layers
        ):
            have = f"n_layers={depth}" if depth is not None else f"source layers {blocks}"
            raise LensLabError(
                f"J-lens artifact with {have} does not fit {model} ({adapter.n_layers} blocks: "
                f"source layers 0..{last})",
                fix=fix,
            )
        matrices = {block_to_resid(int(b)): m for b, m in payload["J"].items()}
        if EMBED_KEY in payload:
            matrices[0] = payload[EMBED_KEY]
        return cls(adapter, matrices, int(payload.get("n_prompts", 0)), meta)


def _save_bytes(obj: Any, path: str | Path) -> None:
    # Through a buffer: torch.save names the zip archive after the file, and the atomic temp
    # name carries a pid, so saving to the path directly would not be byte-stable.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _torch_load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LensLabError(
            f"no J-lens file at {path}",
            fix="fit one (snakemake results/jacobian_lens/<model>/lens.pt) or give the path of "
            "a published artifact",
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors have many types
        raise LensLabError(
            f"cannot read {path}: {err}",
            fix="the file is damaged or not a tensor file; refit or re-download it",
        ) from err
    if not isinstance(payload, dict):
        raise LensLabError(f"{path} is not a J-lens file (not a dict)", fix="refit it")
    return payload


def settings_dict(settings: FitSettings) -> dict[str, Any]:
    return asdict(settings)
