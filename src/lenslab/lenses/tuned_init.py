"""A least-squares start for the tuned lens: one linear map per layer, fit in closed form.

Each training token costs the KL objective about 4 GFLOP on a 30-layer, 49k-vocabulary model
(every layer's state through the unembedding, forward and backward), so on a CPU the KL steps
see only thousands of tokens. A linear map from layer ``l``'s state to the final state, fit by
least squares, needs only the model's forward pass and two ``[D, D]`` sums per layer, so it can
read the whole training text (Din et al. 2023, "Jump to Conclusions", fit such maps and found
them far closer to the output than the logit lens). The KL steps then start from it.

The fit is on directions, not magnitudes: both states are divided by their root mean square
and the map has no intercept, ``min_A sum ||A x/rms(x) - y/rms(y)||^2``. The final norm
(LayerNorm or RMSNorm) is blind to scale, so ``decode(A h)`` equals ``decode(A h/rms(h))``: the
map is exact for raw states, and the tokens with the "massive activations" of attention sinks
(norms 1000x the others) weigh no more than any other token. Sums are kept in float64.

The statistics pass may run the model under bfloat16 autocast (``dtype``): twice as fast on a
CPU, and a regression over hundreds of thousands of tokens does not notice bfloat16's rounding;
the held-out evaluation (lenslab.lenses.tuned_eval, float32) is the judge of the result.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter


def unit_rms(x: Tensor) -> Tensor:
    """``x`` divided by its root mean square over the last dimension (zero rows stay zero)."""
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    return x / rms.clamp_min(torch.finfo(x.dtype).tiny)


class Moments:
    """Running sums ``X^T X`` and ``X^T Y`` of row vectors, per layer, in float64."""

    def __init__(self, n_layers: int, d_model: int):
        self.xx = torch.zeros(n_layers, d_model, d_model, dtype=torch.float64)
        self.xy = torch.zeros(n_layers, d_model, d_model, dtype=torch.float64)
        self.count = 0

    def add(self, layer: int, x: Tensor, y: Tensor) -> None:
        """Add rows ``x``, ``y`` ``[N, D]`` of one layer (float32 products, float64 sums)."""
        x, y = x.float(), y.float()
        self.xx[layer] += (x.T @ x).double()
        self.xy[layer] += (x.T @ y).double()

    def solve(self, ridge: float) -> Tensor:
        """``[L, D, D]`` maps ``A`` with ``y ~ A x``: ``A^T = (X^T X + lam I)^-1 X^T Y``.

        ``lam = ridge * trace(X^T X) / D``: a ridge relative to the states' own scale, which keeps
        directions the text never visits at the identity's neighbourhood of zero, not noise.
        """
        eye = torch.eye(self.xx.shape[-1], dtype=torch.float64)
        lam = ridge * self.xx.diagonal(dim1=-2, dim2=-1).sum(-1) / self.xx.shape[-1]
        # One layer at a time: oneMKL's batched LU fails on these [30, 576, 576] systems
        # ("Parameter 6 was incorrect on entry to DLASWP") where each single solve succeeds.
        maps = [
            torch.linalg.solve(xx + lam_l * eye, xy).T
            for xx, xy, lam_l in zip(self.xx, self.xy, lam, strict=True)
        ]
        return torch.stack(maps)


@torch.no_grad()
def least_squares_maps(
    adapter: ModelAdapter,
    windows: Tensor,
    micro_batch: int,
    ridge: float = 1e-4,
    skip_first: int = 1,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``[L, D, D]``: for each layer ``l < L`` the map fit from ``resid[l]`` to ``resid[L]``.

    ``windows`` ``[N, T]`` are token ids; the first ``skip_first`` positions of each window are
    left out (a window's first token is an attention sink whatever it is).
    """
    n, t = windows.shape
    if n == 0 or t <= skip_first:
        raise LensLabError(
            f"least-squares fit on windows {tuple(windows.shape)} with {skip_first} skipped",
            fix="give windows longer than tuned_lens.train.init_skip tokens",
        )
    moments = Moments(adapter.n_layers, adapter.d_model)
    chunks = windows.split(micro_batch)
    bar = tqdm(chunks, disable=not progress, desc=f"least squares {adapter.name}")
    device = torch.device(adapter.device).type
    for chunk in bar:
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            resid = adapter.resid(chunk.to(adapter.device))
        states = resid[:, :, skip_first:].flatten(1, 2).float().cpu()  # [L+1, tokens, D]
        target = unit_rms(states[-1])
        for layer in range(adapter.n_layers):
            moments.add(layer, unit_rms(states[layer]), target)
        moments.count += states.shape[1]
    bar.close()
    return moments.solve(ridge)
