"""Tuned-lens training throughput (tokens/s) against two baselines, in the same process.

* ours: ``lenslab.lenses.tuned_train.train_tuned_lens`` (one layer's logits at a time, the KL
  gradient formed in place in the log-softmax buffer), with the state cache off so that it, too, runs the
  model every step;
* plain: a straightforward PyTorch loop that decodes every layer at once (``[L, N, V]`` logits),
  ``log_softmax`` + ``kl_div`` under autograd, one backward;
* package: the tuned-lens package's own ``TunedLens`` module with the loss of its training loop
  (per layer, autograd), when the package is installed. Its CLI trainer cannot run here (it needs
  ``torchdata.dataloader2``, removed from torchdata), so its inner loop is reproduced verbatim in
  float32 (the reference autocasts to bfloat16 on the device, which on CPU only slows it down).

All three run the same recipe (SGD Nesterov, clip 1.0) on the same frozen model and windows;
methods are interleaved and each is timed over several steps after a warm-up; the fastest of
the repeats is reported (other processes on a shared machine only ever add time). The model is GPT-2-shaped with GPT-2's vocabulary (50257), where the
per-layer logits dominate the cost, with 4 blocks to keep the run short on 2 cores. When the
embedded model exists (results/models/embedded or LENSLAB_EMBEDDED_DIR), its throughput and the
default recipe's training time on its held-out text (states cached, as in the pipeline) are
printed too.

Run: python benchmarks/bench_tuned_lens.py
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

import torch

import lenslab.gate  # noqa: F401 - registers the fidelity gate that methods consult
from lenslab.lenses.tuned import TunedLens
from lenslab.lenses.tuned_config import TrainSettings, parse_settings
from lenslab.lenses.tuned_train import train_tuned_lens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny

REPO = Path(__file__).resolve().parents[1]
SEQ, BATCH, STEPS, REPEATS = 64, 2, 2, 3


def _sgd(params) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)


def ours(adapter: ModelAdapter, windows: torch.Tensor, steps: int) -> float:
    # cache_mb=0: recompute states every step, as the baselines do (the windows repeat here)
    s = TrainSettings(steps=steps, tokens_per_step=windows.numel(), seq_len=windows.shape[1],
                      micro_batch=windows.shape[0], checkpoint_every=0, cache_mb=0)  # fmt: skip
    t0 = time.perf_counter()
    train_tuned_lens(adapter, windows, s, progress=False)
    return time.perf_counter() - t0


def plain(adapter: ModelAdapter, windows: torch.Tensor, steps: int) -> float:
    lens = TunedLens(adapter)
    opt = _sgd(lens.parameters())
    n_layers = adapter.n_layers
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        with torch.no_grad():
            logits, resid = adapter.run_with_resid(windows)
            logp = torch.log_softmax(logits, -1)
        states = torch.stack([lens.transform(resid[i], i) for i in range(n_layers)])
        logq = torch.log_softmax(adapter.decode(states), -1)  # [L, B, T, V] at once
        target = logp.expand_as(logq)
        loss = torch.nn.functional.kl_div(logq, target, log_target=True, reduction="sum")
        (loss / windows.numel()).backward()
        torch.nn.utils.clip_grad_norm_(lens.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - t0


def package(adapter: ModelAdapter, windows: torch.Tensor, steps: int) -> float | None:
    try:
        from tuned_lens.nn import TunedLens as PackageLens
    except ImportError:
        return None
    model = adapter.model
    lens = PackageLens.from_model(model)
    opt = _sgd([p for p in lens.parameters() if p.requires_grad])
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.no_grad():
            output = model(input_ids=windows, output_hidden_states=True)
        labels = output.logits.float().log_softmax(dim=-1)
        for i, h in enumerate(output.hidden_states[:-1]):  # the reference's loop, fp32
            logits = lens(h, idx=i)
            loss = torch.sum(labels.exp() * (labels - logits.log_softmax(-1)), dim=-1).mean()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(lens.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
    return time.perf_counter() - t0


def measure(
    adapter: ModelAdapter, windows: torch.Tensor, steps: int = STEPS, repeats: int = REPEATS
) -> dict[str, float]:
    """Best tokens/s of each method (interleaved repeats after one warm-up step each)."""
    adapter.model.requires_grad_(False)
    methods = {"ours": ours, "plain": plain, "package": package}
    for fn in methods.values():
        fn(adapter, windows, 1)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            seconds = fn(adapter, windows, steps)
            if seconds is not None:
                times[name].append(seconds)
    tokens = windows.numel() * steps
    return {name: tokens / min(t) for name, t in times.items() if t}


def _embedded_dir() -> Path | None:
    env = os.environ.get("LENSLAB_EMBEDDED_DIR")
    for path in [Path(env)] if env else [REPO / "results/models/embedded"]:
        if (path / "config.json").is_file():
            return path
    return None


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_tiny("gpt2", n_layer=4, n_embd=768, n_head=12, vocab_size=50257,
                       n_positions=1024)  # fmt: skip
    adapter = ModelAdapter(model, name="gpt2-shaped-4L")
    windows = torch.randint(0, 50257, (BATCH, SEQ))
    rates = measure(adapter, windows)
    print(f"GPT-2-shaped model (4 blocks, d=768, V=50257), {windows.numel()} tokens/step, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    for name, rate in rates.items():
        print(f"  {name:8s} {rate:8.1f} tokens/s")
    for name in ("plain", "package"):
        if name in rates:
            print(f"  ratio ours/{name}: {rates['ours'] / rates[name]:.2f}x (goal >= 1)")

    path = _embedded_dir()
    if path is None:
        print("embedded model: not found (build results/models/embedded or set "
              "LENSLAB_EMBEDDED_DIR)")  # fmt: skip
        return
    embedded(path)


def embedded(path: Path, probe_steps: int = 12) -> None:
    """Throughput on the embedded model, and the default recipe's training time on its held-out
    text (cache build + first steps measured, the remaining steps extrapolated)."""
    from lenslab.gate import load_model
    from lenslab.lenses.tuned_config import load_documents, make_windows

    model_cfg = {"name": "embedded", "source": str(path)}
    emb = load_model(model_cfg)
    recipe = parse_settings({})
    seq = min(recipe.train.seq_len, emb.model.config.n_positions)
    rates = measure(
        emb, torch.randint(0, emb.vocab_size, (recipe.train.micro_batch, seq)), steps=10, repeats=5
    )
    print(f"embedded model ({emb.n_layers} blocks, d={emb.d_model}, V={emb.vocab_size}), "
          f"{recipe.train.micro_batch * seq} tokens/step:")  # fmt: skip
    for name, rate in rates.items():
        print(f"  {name:8s} {rate:8.1f} tokens/s")
    for name in ("plain", "package"):
        if name in rates:
            print(f"  ratio ours/{name}: {rates['ours'] / rates[name]:.2f}x (goal >= 1)")

    docs = load_documents(recipe.text, model_cfg, "train", path)
    windows = make_windows(emb.tokenizer, docs, seq)
    stamps: list[float] = []

    def stop(step: int, _kl: list[float]) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == probe_steps:
            raise StopIteration

    t0 = time.perf_counter()
    with contextlib.suppress(StopIteration):
        train_tuned_lens(emb, windows, recipe.train, progress=False, callback=stop)
    step_s = statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    total = stamps[0] - t0 + (recipe.train.steps - 1) * step_s
    print(f"  default recipe ({recipe.train.steps} steps x {recipe.train.tokens_per_step} tokens, "
          f"{windows.shape[0]} text windows, states cached): first step incl. cache "
          f"{stamps[0] - t0:.1f} s, then {step_s:.3f} s/step -> about {total:.0f} s")  # fmt: skip
    cached = recipe.train.tokens_per_step / step_s
    print(
        f"  with cached states: {cached:.0f} tokens/s = {cached / rates['plain']:.2f}x plain"
        + (f", {cached / rates['package']:.2f}x package" if "package" in rates else "")
    )


if __name__ == "__main__":
    main()
