"""The attribute lens: linear relational embeddings (Hernandez et al. 2024) as a `Lens`.

For a relation r (country -> capital, ...) and a residual index ``k``, an LRE approximates what
the model does between the subject and the answer by one affine map. From n prompts:

* ``h`` = ``resid[k]`` at the last subject token (``k = l + 1`` is "the output of block l"),
* ``z`` = ``resid[L]`` at the last prompt token (the last block's output, before the final norm),
* ``W_i = dz/dh`` (the Jacobian of the model's own forward, other positions held fixed),
  ``b_i = z_i - W_i h_i``; ``W`` and ``b`` are their means over the prompts,

and ``LRE(h) = beta * W h + b`` is decoded like any lens, with the final norm and unembedding.
One LRE per residual index makes the attribute lens: it can be applied at every (layer,
position) and goes through the lens statistics unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from lenslab.errors import LensLabError
from lenslab.io import read_tensors, write_tensors
from lenslab.lenses.base import Lens
from lenslab.models.adapter import ModelAdapter
from lenslab.patchscopes.core import write_resid

JACOBIAN_CHUNK = 256  # output dimensions per batched backward pass


@dataclass(frozen=True)
class RelationPrompt:
    """One prompt of a relation: token ids, position of the last subject token, object id."""

    id: str
    ids: list[int]
    subject_pos: int
    object_id: int


def subject_jacobian(
    adapter: ModelAdapter, ids: Sequence[int], subject_pos: int, layer: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, z, J)``: ``h = resid[layer][subject_pos]``, ``z = resid[L][-1]`` and ``J = dz/dh``
    ``[D, D]``, by one forward with ``h`` as a leaf and batched backward passes."""
    layer = adapter.check_layer(layer)
    x = torch.tensor([list(ids)], device=adapter.device)
    with torch.no_grad():
        _, resid = adapter.run_with_resid(x)
    h = resid[layer, 0, subject_pos].detach().clone().requires_grad_(True)
    if layer == adapter.n_layers:
        # z is the state itself (at the last position) or does not depend on it.
        eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        jac = eye if subject_pos % len(ids) == len(ids) - 1 else torch.zeros_like(eye)
        return h.detach(), resid[-1, 0, -1], jac
    rows = torch.zeros(1, dtype=torch.long)
    with torch.enable_grad(), write_resid(adapter, {layer: (rows, h[None])}, subject_pos):
        states: list[Tensor] = []
        with adapter.record_resid(states):
            adapter.forward(x)
        z = states[-1][0, -1]
        out = _jacobian_rows(z, [h])[0]
    return h.detach(), z.detach(), out


def _jacobian_rows(z: Tensor, inputs: Sequence[Tensor], pos: int | None = None) -> Tensor:
    """``[len(inputs), D_z, D]``: ``dz / x`` for each input ``x`` (``[D]``, or ``[1, T, D]`` read
    at position ``pos``). Backward passes batched over output dimensions (vmap), in chunks that
    keep the batched gradients under ~1 GB; one backward per row where an op does not support
    batching."""
    inputs = list(inputs)
    chunk = max(1, min(JACOBIAN_CHUNK, 2**28 // sum(x.numel() for x in inputs)))
    eye = torch.eye(z.shape[0], dtype=z.dtype, device=z.device)
    blocks = []
    for c0 in range(0, z.shape[0], chunk):
        seeds = eye[c0 : c0 + chunk]
        try:
            grads = torch.autograd.grad(
                z, inputs, seeds, retain_graph=True, is_grads_batched=True, allow_unused=True
            )
        except RuntimeError:
            grads = [
                torch.stack(g) for g in zip(*[_grads(z, inputs, s) for s in seeds], strict=True)
            ]
        blocks.append(
            torch.stack([_at(g, x, len(seeds), pos) for g, x in zip(grads, inputs, strict=True)])
        )
    return torch.cat(blocks, dim=1)


def _grads(z: Tensor, inputs: list[Tensor], seed: Tensor) -> list[Tensor]:
    grads = torch.autograd.grad(z, inputs, seed, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


def _at(grad: Tensor | None, x: Tensor, n_seeds: int, pos: int | None) -> Tensor:
    """Batched gradient ``[seeds, *x.shape]`` at ``pos``; None (x does not reach z) is zero."""
    if grad is None:
        return torch.zeros(n_seeds, x.shape[-1], dtype=x.dtype, device=x.device)
    return grad if pos is None else grad[:, 0, pos]


def estimate_lre(
    adapter: ModelAdapter, prompts: Sequence[RelationPrompt], layer: int
) -> tuple[Tensor, Tensor]:
    """``(W, b)`` at residual index ``layer``: mean Jacobian and mean ``z_i - W_i h_i``."""
    _check_prompts(prompts)
    ws, bs = [], []
    for p in prompts:
        h, z, jac = subject_jacobian(adapter, p.ids, p.subject_pos, layer)
        ws.append(jac)
        bs.append(z - jac @ h)
    return torch.stack(ws).mean(0), torch.stack(bs).mean(0)


def subject_jacobians(
    adapter: ModelAdapter, ids: Sequence[int], subject_pos: int
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`subject_jacobian` at every residual index at once: ``h`` ``[L+1, D]``, ``z``
    ``[D]``, ``J`` ``[L+1, D, D]``. The gradient of ``z`` with respect to a state the blocks
    pass on is the Jacobian of writing that state (the same graph below it), so one set of
    backward passes from ``z`` serves every layer: L times cheaper than a pass per layer."""
    _, states = adapter.run_with_resid_graph(list(ids))
    n, pos = adapter.n_layers, subject_pos % len(ids)
    z = states[n][0, -1]
    jacs = _jacobian_rows(z, states[:n], pos)  # [L, D_z, D_h]
    eye = torch.eye(z.shape[0], dtype=jacs.dtype, device=jacs.device)
    last = eye if pos == len(ids) - 1 else torch.zeros_like(eye)  # z is resid[L] itself
    h = torch.stack([s[0, pos] for s in states]).detach()
    return h, z.detach(), torch.cat([jacs, last[None]])


def _check_prompts(prompts: Sequence[RelationPrompt]) -> None:
    if not prompts:
        raise LensLabError("an LRE needs at least one prompt", fix="give n >= 1 relation prompts")


class AttributeLens(Lens):
    """One LRE per residual index: ``transform(h, k) = beta * W_k h + b_k``."""

    name = "attribute"

    def __init__(
        self,
        adapter: ModelAdapter,
        weight: Tensor,
        bias: Tensor,
        beta: float = 1.0,
        relation: str = "",
        n_prompts: int = 0,
    ):
        super().__init__(adapter, affine=True)
        n, d = adapter.n_layers + 1, adapter.d_model
        if tuple(weight.shape) != (n, d, d) or tuple(bias.shape) != (n, d):
            raise LensLabError(
                f"attribute lens of shape {tuple(weight.shape)} / {tuple(bias.shape)} does not "
                f"fit {adapter.name or 'this model'} ({n} residual states of width {d})",
                fix="estimate the lens on this model (fit_attribute_lens)",
            )
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.beta = float(beta)
        self.relation = relation
        self.n_prompts = n_prompts

    @property
    def description(self) -> str:
        return (
            f"attribute lens ({self.relation or 'relation'}: LRE beta={self.beta:g} * W h + b "
            f"from {self.n_prompts} prompts), decoded with the full final norm and unembedding"
        )

    def transform(self, h: Tensor, layer: int) -> Tensor:
        layer = self.adapter.check_layer(layer)
        w, b = self.weight[layer], self.bias[layer]
        return self.beta * (h.to(w.dtype) @ w.T) + b


def save_attribute_lenses(lenses: Sequence[AttributeLens], path: str | Path) -> None:
    """One safetensors file for several relations: ``<relation>.weight`` / ``.bias`` plus each
    relation's beta and prompt count in the metadata."""
    tensors, meta = {}, {}
    for lens in lenses:
        if not lens.relation or "." in lens.relation or lens.relation in meta:
            raise LensLabError(
                f"relation name {lens.relation!r} is empty, repeated or contains '.'",
                fix="give every attribute lens its own relation name without dots",
            )
        tensors[f"{lens.relation}.weight"] = lens.weight
        tensors[f"{lens.relation}.bias"] = lens.bias
        meta[lens.relation] = {"beta": lens.beta, "n_prompts": lens.n_prompts}
    write_tensors(tensors, path, {"relations": meta})


def load_attribute_lens(
    path: str | Path, adapter: ModelAdapter, relation: str, beta: float | None = None
) -> AttributeLens:
    """The attribute lens of ``relation`` from a file of :func:`save_attribute_lenses`."""
    tensors, meta = read_tensors(path)
    relations = meta.get("relations", {})
    if relation not in relations:
        raise LensLabError(
            f"{path} holds no attribute lens for relation {relation!r}",
            fix=f"use one of {sorted(relations)}",
        )
    info = relations[relation]
    return AttributeLens(
        adapter,
        tensors[f"{relation}.weight"],
        tensors[f"{relation}.bias"],
        info["beta"] if beta is None else beta,
        relation,
        info["n_prompts"],
    )


def fit_attribute_lens(
    adapter: ModelAdapter,
    prompts: Sequence[RelationPrompt],
    beta: float = 1.0,
    relation: str = "",
    progress: bool = False,
) -> AttributeLens:
    """An LRE at every residual index 0..L from the same ``prompts`` (one set of backward
    passes per prompt serves every layer: :func:`subject_jacobians`)."""
    _check_prompts(prompts)
    ws, bs = [], []
    for p in tqdm(prompts, desc=f"LRE {relation}", disable=not progress):
        h, z, jac = subject_jacobians(adapter, p.ids, p.subject_pos)
        ws.append(jac)
        bs.append(z - torch.einsum("lij,lj->li", jac, h))
    return AttributeLens(
        adapter, torch.stack(ws).mean(0), torch.stack(bs).mean(0), beta, relation, len(prompts)
    )
