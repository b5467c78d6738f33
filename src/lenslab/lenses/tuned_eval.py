"""Held-out evaluation of lenses (F7) and representational drift (F8).

Per layer and lens, over every position that has a next token:

* ``kl``: KL(final || lens), the model's final distribution against the lens's, natural log,
  exact log-softmax (no probability clipping);
* ``ce``: cross-entropy of the lens's distribution with the true next token;
* ``entropy``: entropy of the lens's distribution.

Each is reported in nats per token and in bits per byte (the sum in bits over the sum of UTF-8
bytes of the predicted tokens; special tokens such as end-of-text count as one byte, a newline).
Confidence intervals are percentile bootstraps over windows (a window's tokens are not
independent of each other; windows are), with a seeded generator.

Drift (F8), on the first ``drift_windows`` windows with position 0 left out (its states carry
the large "attention sink" norms that would dominate any similarity): linear CKA and the mean
cosine similarity of the centred states of every pair of layers, and the layer-transfer matrix
``KL(final || decode(T_i(h_j)))`` for translator ``i`` (``i = L``: identity, the logit lens)
applied to layer ``j``'s states.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lenslab.lenses.base import Lens
from lenslab.lenses.tuned import TunedLens
from lenslab.lenses.tuned_config import EvalSettings
from lenslab.models.adapter import ModelAdapter

METRICS = ("kl", "ce", "entropy")
UNITS = ("nats_per_token", "bits_per_byte")


def window_bytes(tokenizer, windows: Tensor) -> Tensor:
    """UTF-8 bytes of each window's predicted tokens (positions 1..T-1); specials count 1."""
    special = set(tokenizer.all_special_ids)
    out = []
    for ids in windows[:, 1:].tolist():
        text = tokenizer.decode([i for i in ids if i not in special])
        out.append(len(text.encode("utf-8")) + sum(i in special for i in ids))
    return torch.tensor(out, dtype=torch.float64)


@torch.no_grad()
def token_metrics(logq: Tensor, logp: Tensor, target: Tensor) -> Tensor:
    """Per token ``[N, 3]``: KL(p || q), CE of ``target`` under q, entropy of q (nats)."""
    q = logq.exp()
    kl = (logp.exp() * (logp - logq)).sum(-1)
    ce = -logq.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    entropy = -(q * logq).sum(-1)
    return torch.stack([kl, ce, entropy], dim=-1)


@torch.no_grad()
def window_sums(
    adapter: ModelAdapter, lenses: dict[str, Lens], windows: Tensor, micro_batch: int = 32
) -> Tensor:
    """``[W, lenses, L+1, 3]`` sums over each window's positions 0..T-2 of :func:`token_metrics`."""
    out = []
    for chunk in windows.split(micro_batch):
        chunk = chunk.to(adapter.device)
        logits, resid = adapter.run_with_resid(chunk)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        target = chunk[:, 1:]
        per_lens = []
        for lens in lenses.values():
            layers = []
            for layer in range(adapter.n_layers + 1):
                z = lens.logits(resid[layer][:, :-1], layer).float()
                m = token_metrics(torch.log_softmax(z, dim=-1), logp, target)
                layers.append(m.sum(1).double().cpu())  # [B, 3]
            per_lens.append(torch.stack(layers, dim=1))  # [B, L+1, 3]
        out.append(torch.stack(per_lens, dim=1))
    return torch.cat(out)


def bootstrap_ratio(
    num: np.ndarray, den: np.ndarray, n_boot: int, ci: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratio of sums over windows (``num`` [W, K], ``den`` [W]) and its percentile CI."""
    value = num.sum(0) / den.sum()
    if n_boot == 0 or num.shape[0] < 2:
        return value, np.full_like(value, np.nan), np.full_like(value, np.nan)
    rng = np.random.default_rng(seed)
    w = num.shape[0]
    counts = np.stack([np.bincount(rng.integers(0, w, w), minlength=w) for _ in range(n_boot)])
    boots = (counts @ num) / (counts @ den)[:, None]
    alpha = (1 - ci) / 2
    return value, np.quantile(boots, alpha, axis=0), np.quantile(boots, 1 - alpha, axis=0)


def evaluate_lenses(
    adapter: ModelAdapter, lenses: dict[str, Lens], windows: Tensor, settings: EvalSettings
) -> pd.DataFrame:
    """Tidy table: lens, layer, metric, unit, value, ci_low, ci_high, n_windows, n_tokens, n_bytes."""
    windows = windows[: settings.max_windows]
    sums = window_sums(adapter, lenses, windows, settings.micro_batch)  # [W, K, L+1, 3]
    n_w, n_lens, n_layer, n_met = sums.shape
    flat = sums.reshape(n_w, -1).numpy()
    tokens = np.full(n_w, windows.shape[1] - 1, dtype=np.float64)
    nbytes = window_bytes(adapter.tokenizer, windows).numpy()
    s = settings
    per_token = bootstrap_ratio(flat, tokens, s.bootstrap, s.ci, s.seed)
    per_byte = bootstrap_ratio(flat / math.log(2), nbytes, s.bootstrap, s.ci, s.seed)
    names = list(lenses)
    rows = []
    for unit, (value, low, high) in zip(UNITS, (per_token, per_byte), strict=True):
        shape = (n_lens, n_layer, n_met)
        value, low, high = value.reshape(shape), low.reshape(shape), high.reshape(shape)
        for k in range(n_lens):
            for layer in range(n_layer):
                for m, metric in enumerate(METRICS):
                    rows.append(
                        (
                            names[k],
                            layer,
                            metric,
                            unit,
                            value[k, layer, m],
                            low[k, layer, m],
                            high[k, layer, m],
                        )
                    )
    df = pd.DataFrame(
        rows, columns=["lens", "layer", "metric", "unit", "value", "ci_low", "ci_high"]
    )
    df["n_windows"] = n_w
    df["n_tokens"] = int(tokens.sum())
    df["n_bytes"] = int(nbytes.sum())
    df["ci_level"] = s.ci
    return df


# -- drift (F8) --------------------------------------------------------------------------------
@torch.no_grad()
def _states(adapter: ModelAdapter, windows: Tensor, micro_batch: int) -> Tensor:
    """Residual states ``[L+1, N, D]`` at positions 1..T-1 of every window."""
    states = []
    for chunk in windows.split(micro_batch):
        resid = adapter.resid(chunk.to(adapter.device))
        states.append(resid[:, :, 1:].flatten(1, 2))
    return torch.cat(states, 1)


def linear_cka(states: Tensor) -> Tensor:
    """Linear CKA of centred states for every pair of layers: ``[L+1, L+1]``."""
    x = states.double()
    x = x - x.mean(1, keepdim=True)
    n_layers = x.shape[0]
    out = torch.empty(n_layers, n_layers, dtype=torch.float64)
    for i in range(n_layers):
        for j in range(i, n_layers):
            out[i, j] = out[j, i] = (x[i].T @ x[j]).pow(2).sum()
    diag = out.diagonal().sqrt()
    # One division by the product (multiplication commutes exactly): symmetric by construction,
    # where dividing twice rounds the two triangles differently.
    return out / (diag[:, None] * diag[None, :])


def mean_cosine(states: Tensor) -> Tensor:
    """Mean over tokens of the cosine similarity of centred states, layer by layer."""
    x = states.double()
    x = x - x.mean(1, keepdim=True)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("ind,jnd->ij", x, x) / x.shape[1]


@torch.no_grad()
def transfer_matrix(lens: TunedLens, states: Tensor, chunk: int = 1024) -> Tensor:
    """``[L+1, L+1]``: row ``i`` = translator of layer i (row L: identity), column ``j`` = the
    states of layer j; entry = mean KL(final || lens) in nats. Tokens go in chunks so that
    only a few ``[chunk, V]`` arrays exist at a time."""
    adapter, n = lens.adapter, lens.adapter.n_layers
    total = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for start in range(0, states.shape[1], chunk):
        part = states[:, start : start + chunk]
        logp = torch.log_softmax(adapter.decode(part[n], lens.affine).float(), -1)
        p = logp.exp()
        for i in range(n + 1):
            for j in range(n + 1):
                h = lens.transform(part[j], i)  # layer n: the identity
                logq = torch.log_softmax(adapter.decode(h, lens.affine).float(), -1)
                total[i, j] += (p * (logp - logq)).sum(-1).double().sum().cpu()
    return total / states.shape[1]


def drift_table(
    adapter: ModelAdapter, lens: TunedLens, windows: Tensor, settings: EvalSettings
) -> pd.DataFrame:
    """Tidy: kind (cka, cosine, transfer_kl), row, col, value, n_tokens; no rows when
    ``drift_windows`` is 0 (a study without F8 skips the ~7 TFLOP transfer matrix)."""
    if settings.drift_windows == 0:
        return pd.DataFrame(columns=["kind", "row", "col", "value", "n_tokens"])
    states = _states(adapter, windows[: settings.drift_windows], settings.micro_batch)
    mats = {
        "cka": linear_cka(states),
        "cosine": mean_cosine(states),
        "transfer_kl": transfer_matrix(lens, states),
    }
    rows = [
        (kind, i, j, float(m[i, j]))
        for kind, m in mats.items()
        for i in range(m.shape[0])
        for j in range(m.shape[1])
    ]
    df = pd.DataFrame(rows, columns=["kind", "row", "col", "value"])
    df["n_tokens"] = int(states.shape[1])
    return df
