"""Cross-model patchscopes: an affine map from one model's residual space into another's.

Fitted by least squares with a bias on paired states (the same tokens run through both models),
with its fit on held-out positions, so a poor map is visible before anything is patched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lenslab.errors import LensLabError


@dataclass
class AffineMap:
    """``f(h) = h A^T + b``, mapping width ``A.shape[1]`` to ``A.shape[0]``."""

    weight: Tensor  # [D_out, D_in]
    bias: Tensor  # [D_out]

    def __call__(self, h: Tensor) -> Tensor:
        return h.to(self.weight.dtype) @ self.weight.T + self.bias


def fit_affine(x: Tensor, y: Tensor, ridge: float = 0.0) -> AffineMap:
    """Least-squares ``y ~ x A^T + b`` over rows (``x`` ``[N, D_in]``, ``y`` ``[N, D_out]``).
    ``ridge`` > 0 adds ``ridge * ||A||^2`` (the bias is not penalised)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise LensLabError(
            f"affine fit needs paired rows, got {tuple(x.shape)} and {tuple(y.shape)}",
            fix="pass states of the same tokens from both models, stacked as [N, D]",
        )
    if x.shape[0] <= x.shape[1] and ridge == 0:
        raise LensLabError(
            f"{x.shape[0]} pairs cannot determine an affine map from width {x.shape[1]}",
            fix="give more token positions than the source width, or set a ridge penalty",
        )
    x64, y64 = x.double(), y.double()
    xm, ym = x64.mean(0), y64.mean(0)
    xc, yc = x64 - xm, y64 - ym  # centring separates the bias from the linear part
    if ridge > 0:
        gram = xc.T @ xc + ridge * torch.eye(x.shape[1], dtype=torch.float64)
        weight = torch.linalg.solve(gram, xc.T @ yc).T
    else:
        weight = torch.linalg.lstsq(xc, yc).solution.T
    bias = ym - xm @ weight.T
    return AffineMap(weight.to(x.dtype), bias.to(x.dtype))


def r_squared(pred: Tensor, y: Tensor) -> float:
    """Explained variance of ``y`` by ``pred``, pooled over every output dimension."""
    res = (y.double() - pred.double()).pow(2).sum()
    tot = (y.double() - y.double().mean(0)).pow(2).sum()
    return float(1 - res / tot)


def split_fit(
    x: Tensor, y: Tensor, heldout: float = 0.25, seed: int = 0, ridge: float = 0.0
) -> tuple[AffineMap, float, float]:
    """Fit on a random ``1 - heldout`` share of rows; (map, train R^2, held-out R^2)."""
    if not 0 < heldout < 1:
        raise LensLabError(f"heldout={heldout} is not a share", fix="use a value in (0, 1)")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=gen)
    n_test = max(1, int(round(heldout * x.shape[0])))
    test, train = order[:n_test], order[n_test:]
    fmap = fit_affine(x[train], y[train], ridge)
    return fmap, r_squared(fmap(x[train]), y[train]), r_squared(fmap(x[test]), y[test])


@torch.no_grad()
def paired_states(
    source, target, texts: list[list[int]], layer: int, target_layer: int
) -> tuple[Tensor, Tensor]:
    """``resid[layer]`` of ``source`` and ``resid[target_layer]`` of ``target`` at every
    position of every token list (both models read the same ids): ``[N, D_src]``, ``[N, D_tgt]``."""
    xs, ys = [], []
    for ids in texts:
        x = torch.tensor([ids])
        xs.append(source.run_with_resid(x.to(source.device))[1][layer, 0].cpu())
        ys.append(target.run_with_resid(x.to(target.device))[1][target_layer, 0].cpu())
    return torch.cat(xs), torch.cat(ys)


def fit_cross_model(
    source, target, texts: list[list[int]], pairs: list[tuple[int, int]], **kwargs
) -> dict[tuple[int, int], tuple[AffineMap, float, float]]:
    """One affine map per (source layer, target layer) pair, with train and held-out R^2
    (``kwargs`` go to :func:`split_fit`)."""
    return {
        (a, b): split_fit(*paired_states(source, target, texts, a, b), **kwargs) for a, b in pairs
    }
