"""Training a tuned lens: KL(final || lens) at the same position, summed over layers.

The recipe is the reference implementation's (tuned-lens 0.2): SGD with Nesterov momentum 0.9
and ``lr = lr_scale * (1 - momentum)``, weight decay 1e-3, linear decay to zero, global gradient
clipping at 1.0, each layer's loss the token-mean KL of the model's final distribution to the
lens's. Differences are in how, not what:

* The base model is frozen and runs once per micro-batch under ``no_grad``; then the layers are
  visited one at a time, so only one layer's ``[tokens, vocab]`` logits exist at any moment.
  When the training text's residual streams fit in ``cache_mb`` and the run reads the text more
  than once, they are computed once and kept, which saves the model's forward pass per epoch.
* The KL gradient with respect to the lens logits is ``softmax(z) - p`` (per token, over the
  token count). It is formed in place in the log-softmax buffer and pushed back through the
  decoder with ``z.backward(grad)``, which skips autograd's log-softmax/KL graph and its copies.
* The order of training windows is a function of (seed, step), so a resumed run reads the same
  windows as an uninterrupted one; checkpoints hold lens, optimizer, step and the loss history,
  written atomically, and a run resumes from one only when settings, model and text all match.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lenslab.errors import LensLabError
from lenslab.io import atomic_path
from lenslab.lenses.tuned import TunedLens, unembed_hash
from lenslab.lenses.tuned_config import INIT_DTYPES, TrainSettings
from lenslab.lenses.tuned_init import least_squares_maps
from lenslab.models.adapter import ModelAdapter


def lr_factor(step: int, s: TrainSettings) -> float:
    """Linear warmup then linear decay to zero (transformers' linear schedule)."""
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    return max(0.0, (s.steps - step) / (s.steps - s.warmup_steps))


class _Orders:
    """Window indices of a step: epochs of seeded permutations, a function of (seed, step)."""

    def __init__(self, n_windows: int, s: TrainSettings):
        self.n, self.s, self.perms = n_windows, s, {}

    def __call__(self, step: int) -> Tensor:
        per_step = self.s.windows_per_step
        ks = torch.arange(step * per_step, (step + 1) * per_step)
        out = torch.empty_like(ks)
        for epoch in ks.div(self.n, rounding_mode="floor").unique().tolist():
            if epoch not in self.perms:
                gen = torch.Generator().manual_seed(self.s.seed * 1_000_003 + epoch)
                self.perms = {epoch: torch.randperm(self.n, generator=gen)}  # keep one epoch
            sel = ks.div(self.n, rounding_mode="floor") == epoch
            out[sel] = self.perms[epoch][ks[sel] % self.n]
        return out


def teacher(final_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Final distribution ``p`` ``[N, V]`` and its negative entropy ``sum p log p`` ``[N]``."""
    logp = torch.log_softmax(final_logits.float().flatten(0, -2), dim=-1)
    p = logp.exp()
    return p, torch.einsum("nv,nv->n", p, logp)


def layer_kl_backward(
    lens: TunedLens, h: Tensor, layer: int, p: Tensor, neg_entropy: Tensor, scale: float
) -> Tensor:
    """Sum over tokens of KL(p || lens) at ``layer``; accumulates ``scale`` x its gradient.

    With lens log-probabilities ``log q = log_softmax(z)``, KL(p||q) = sum p log p - sum p log q,
    and its gradient with respect to the logits ``z`` is ``q - p``; it is formed in the buffer
    of ``log q`` (one fused log-softmax, two in-place passes) instead of autograd's graph.
    """
    z = lens.logits(h.flatten(0, -2), layer).float()
    with torch.no_grad():
        grad = torch.log_softmax(z, dim=-1)
        kl = neg_entropy - torch.einsum("nv,nv->n", p, grad)
        grad.exp_().sub_(p).mul_(scale)
    z.backward(grad)
    return kl.sum()


def _fingerprint(adapter: ModelAdapter, windows: Tensor, s: TrainSettings) -> str:
    blob = json.dumps(
        {
            "settings": asdict(s),
            "model": unembed_hash(adapter),
            "shape": [adapter.n_layers, adapter.d_model, adapter.vocab_size],
            "text": hashlib.sha256(windows.numpy().tobytes()).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged checkpoint is only a lost shortcut
        return None
    return state if state.get("fingerprint") == fingerprint else None


def _optimizer(lens: TunedLens, s: TrainSettings) -> torch.optim.SGD:
    return torch.optim.SGD(
        lens.parameters(),
        # PyTorch's momentum scales the step by 1 / (1 - momentum); the reference undoes it.
        lr=s.lr_scale * (1 - s.momentum),
        momentum=s.momentum,
        nesterov=s.nesterov and s.momentum > 0,
        weight_decay=s.weight_decay,
    )


def train_tuned_lens(
    adapter: ModelAdapter,
    windows: Tensor,
    settings: TrainSettings,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[int, list[float]], None] | None = None,
) -> tuple[TunedLens, pd.DataFrame]:
    """Train a tuned lens on ``windows`` ``[N, T]``; returns it and the per-step loss table.

    ``checkpoint``: file to save to every ``settings.checkpoint_every`` steps and to resume
    from when it matches this run; removed once training completes. ``callback(step, kl)`` runs
    after each step with the per-layer mean KL in nats.
    """
    if windows.ndim != 2 or windows.shape[0] == 0:
        raise LensLabError(f"windows must be [N, T] with N > 0, got {tuple(windows.shape)}")
    # No gradients for the base model (the backward pass then skips the unembedding's weight
    # gradient, a [V, D] matmul per layer); its flags are restored afterwards.
    flags = {p: p.requires_grad for p in adapter.model.parameters()}
    adapter.model.requires_grad_(False)
    try:
        return _train(adapter, windows, settings, checkpoint, progress, callback)
    finally:
        for param, flag in flags.items():
            param.requires_grad_(flag)


def _train(
    adapter: ModelAdapter,
    windows: Tensor,
    s: TrainSettings,
    checkpoint: str | Path | None,
    progress: bool,
    callback: Callable[[int, list[float]], None] | None,
) -> tuple[TunedLens, pd.DataFrame]:
    lens = TunedLens(adapter, bias=s.bias)
    opt = _optimizer(lens, s)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    fingerprint = _fingerprint(adapter, windows, s)
    history: list[list[float]] = []
    start = 0
    state = _load_checkpoint(ckpt_path, fingerprint)
    if state is not None:
        lens.layer_translators.load_state_dict(state["lens"])
        opt.load_state_dict(state["optim"])
        history, start = [list(r) for r in state["history"]], int(state["step"])
    elif s.init == "least_squares":
        _start_from_least_squares(lens, windows, s, progress)

    orders = _Orders(windows.shape[0], s)
    states = _States(adapter, windows, s)
    n_layers = adapter.n_layers
    bar = tqdm(
        range(start, s.steps),
        initial=start,
        total=s.steps,
        disable=not progress,
        desc=f"tuned lens {adapter.name}",
        dynamic_ncols=True,
    )
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = s.lr_scale * (1 - s.momentum) * lr_factor(step, s)
        opt.zero_grad(set_to_none=False)
        idx = orders(step)
        n_tokens = len(idx) * windows.shape[1]
        kl = _accumulate(lens, states, idx, s.micro_batch, n_tokens)
        torch.nn.utils.clip_grad_norm_(lens.parameters(), s.grad_clip)
        opt.step()
        row = [step, opt.param_groups[0]["lr"], *(float(k) / n_tokens for k in kl)]
        history.append(row)
        bar.set_postfix_str("KL/layer " + " ".join(f"{v:.3f}" for v in row[2:]))
        if callback is not None:
            callback(step, row[2:])
        done = step + 1
        if ckpt_path is not None and s.checkpoint_every and done % s.checkpoint_every == 0:
            _save_checkpoint(
                ckpt_path,
                {
                    "fingerprint": fingerprint,
                    "step": done,
                    "lens": lens.layer_translators.state_dict(),
                    "optim": opt.state_dict(),
                    "history": history,
                },
            )
    bar.close()
    if ckpt_path is not None and ckpt_path.exists():
        ckpt_path.unlink()
    lens.info = {"train": asdict(s), "text_windows": int(windows.shape[0])}
    return lens, _history_table(history, n_layers)


def _start_from_least_squares(
    lens: TunedLens, windows: Tensor, s: TrainSettings, progress: bool
) -> None:
    """Translators ``A_l - I`` (the lens maps ``h`` to ``A_l h``), biases zero."""
    dtype = INIT_DTYPES[s.init_dtype]
    maps = least_squares_maps(
        lens.adapter, windows, s.micro_batch, s.init_ridge, s.init_skip, progress, dtype
    )
    eye = torch.eye(maps.shape[-1], dtype=torch.float64)
    with torch.no_grad():
        for translator, a in zip(lens.layer_translators, maps, strict=True):
            translator.weight.copy_((a - eye).to(translator.weight.dtype))
            if translator.bias is not None:
                translator.bias.zero_()


class _States:
    """Residual streams of training windows: cached once when they fit in ``cache_mb`` and the
    run sees the text more than once, else recomputed per micro-batch (frozen model, no grad)."""

    def __init__(self, adapter: ModelAdapter, windows: Tensor, s: TrainSettings):
        self.adapter, self.windows, self.cache = adapter, windows, None
        n, t = windows.shape
        size_mb = n * (adapter.n_layers + 1) * t * adapter.d_model * 4 / 2**20
        epochs = s.steps * s.windows_per_step / n
        if s.cache_mb and epochs > 1 and size_mb <= s.cache_mb:
            parts = []
            with torch.no_grad():
                for chunk in windows.split(s.micro_batch):
                    parts.append(adapter.resid(chunk.to(adapter.device)).transpose(0, 1))
            self.cache = torch.cat(parts)  # [N, L+1, T, D]

    @torch.no_grad()
    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Final logits ``[B, T, V]`` and residual stream ``[L+1, B, T, D]`` of windows ``idx``."""
        if self.cache is None:
            return self.adapter.run_with_resid(self.windows[idx].to(self.adapter.device))
        resid = self.cache[idx].transpose(0, 1)
        # decode(resid[L]) is the model's own logits (the adapter's contract)
        return self.adapter.decode(resid[-1]), resid


def _accumulate(
    lens: TunedLens, states: _States, idx: Tensor, micro: int, n_tokens: int
) -> list[Tensor]:
    """Gradients of sum_l mean_tokens KL_l for one step; returns per-layer KL sums."""
    n_layers = lens.adapter.n_layers
    totals = [torch.zeros(()) for _ in range(n_layers)]
    for chunk in idx.split(micro):
        logits, resid = states(chunk)
        with torch.no_grad():
            p, neg_entropy = teacher(logits)
        del logits
        for layer in range(n_layers):
            totals[layer] += layer_kl_backward(
                lens, resid[layer], layer, p, neg_entropy, 1.0 / n_tokens
            ).cpu()
    return totals


def _history_table(history: list[list[float]], n_layers: int) -> pd.DataFrame:
    """Tidy loss curve: step, layer, lr, kl_nats (token mean of the step)."""
    rows = [
        (int(r[0]), layer, float(r[1]), float(r[2 + layer]))
        for r in history
        for layer in range(n_layers)
    ]
    return pd.DataFrame(rows, columns=["step", "layer", "lr", "kl_nats"])
