"""Benchmark of the lens statistics (not a test): speed against a plain logit lens, and memory.

1. Speed, on a GPT-2-small-shaped random model (12 blocks, d=768, vocab 50257) and a 256-token
   text, in one process, interleaved repetitions:
   baseline = forward with hidden states + one plain unembedding (final norm + matmul) per state;
   lens     = forward with hidden states + every statistic of ``prompt_stats`` (top-k, 3 ranks,
              KL final/input, reverse KL, JS, MSE, cosine, entropy). Goal: ratio <= 1.15.
2. Memory, on a GPT-2-XL-shaped model (d=1600, 25 heads, vocab 50257) and a 1024-token text, in
   subprocesses: the resident-set peak of ``prompt_stats`` alone (Linux VmHWM, reset before the
   call through /proc/self/clear_refs) for a few depths, next to the bytes of the largest live
   logits tensors of the chunking and what holding all (L+1) x T x V logits would take (a full
   48-block GPT-2 XL is ~6 GB of fp32 weights and minutes of CPU per forward here, so depth is
   varied on fewer blocks: the statistics' memory depends on the chunk, not on the depth).

Run: ``python benchmarks/bench_lens.py`` (about 2-3 minutes on 2 cores; ``--quick``: fewer reps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

import lenslab.gate  # noqa: F401 - registers the fidelity gate that methods consult
from lenslab.lenses.logit import LogitLens
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny
from lenslab.runtime import setup
from lenslab.stats.lens_stats import LensConfig, prompt_stats

VOCAB = 50257
GIB = 2**30


def _model(n_layer: int, n_embd: int, n_head: int) -> ModelAdapter:
    model = build_tiny(
        "gpt2", n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=VOCAB, n_positions=1024
    )
    return ModelAdapter(model, name=f"gpt2-shaped-{n_layer}x{n_embd}")


def _ids(n: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def _baseline(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    _, resid = adapter.run_with_resid(ids)
    for layer in range(adapter.n_layers + 1):
        adapter.decode(resid[layer, 0])


@torch.no_grad()
def _lens(adapter: ModelAdapter, ids: torch.Tensor, cfg: LensConfig) -> None:
    _, resid = adapter.run_with_resid(ids)
    prompt_stats(LogitLens(adapter), resid[:, 0], ids[0], cfg)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(reps: int, eager: bool) -> None:
    adapter = _model(12, 768, 12)
    ids = _ids(256)
    cfg = LensConfig(compile="on")
    print(f"speed: {adapter.name}, 256 tokens, chunks {cfg.chunk_layers} layers x "
          f"{cfg.chunk_positions} positions, threads {torch.get_num_threads()}")  # fmt: skip
    t_compile = _timed(lambda: _lens(adapter, ids, cfg))  # first call compiles (cached on disk)
    _baseline(adapter, ids)
    print(f"  first lens call (includes torch.compile): {t_compile:.1f} s")
    base, lens = [], []
    for _ in range(reps):
        base.append(_timed(lambda: _baseline(adapter, ids)))
        lens.append(_timed(lambda: _lens(adapter, ids, cfg)))
    ratios = [b2 / b1 for b1, b2 in zip(base, lens, strict=True)]
    print(f"  baseline (forward + {adapter.n_layers + 1} unembeddings): "
          f"{', '.join(f'{t:.2f}' for t in base)} s")  # fmt: skip
    print(f"  lens statistics (fused):  {', '.join(f'{t:.2f}' for t in lens)} s")
    print(f"  RATIO lens/baseline: min-over-min {min(lens) / min(base):.3f}, "
          f"median pairwise {statistics.median(ratios):.3f} (goal <= 1.15)")  # fmt: skip
    if eager:
        t_eager = _timed(lambda: _lens(adapter, ids, LensConfig(compile="off")))
        t_base = _timed(lambda: _baseline(adapter, ids))
        print(f"  eager reduction (compile=off), one run: {t_eager:.2f} s, "
              f"ratio {t_eager / t_base:.3f}")  # fmt: skip


def _status(key: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(n_layer: int, n_tokens: int) -> None:
    """Runs in a subprocess: prints JSON with the peak RSS of prompt_stats alone."""
    setup(2)
    adapter = _model(n_layer, 1600, 25)
    ids = _ids(n_tokens)
    with torch.no_grad():
        _, resid = adapter.run_with_resid(ids)
    resid = resid[:, 0].clone()
    cfg = LensConfig(compile="on")
    lens = LogitLens(adapter)
    prompt_stats(lens, resid[:, :8], ids[0, :8], cfg)  # compile outside the measurement
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the resident-set high-water mark (VmHWM)
    before = _status("VmRSS")
    start = time.perf_counter()
    prompt_stats(lens, resid, ids[0], cfg)
    seconds = time.perf_counter() - start
    print(json.dumps({"n_layer": n_layer, "peak_delta": _status("VmHWM") - before, "seconds": seconds,
                      "chunk_layers": cfg.chunk_layers, "chunk_positions": cfg.chunk_positions}))  # fmt: skip


def predicted_bytes(cfg: LensConfig, n_tokens: int, vocab: int = VOCAB) -> int:
    """Largest live logits-sized float32 tensors of one position chunk: the layer chunk, the
    final and layer-0 logits, 3 references (p_final, log p_final, p_input) and top-k copies."""
    tc = min(cfg.chunk_positions, n_tokens)
    return 4 * tc * vocab * (cfg.chunk_layers + 2 + 3)


def memory(depths: list[int], n_tokens: int) -> None:
    cfg = LensConfig()
    print(f"memory: GPT-2-XL-shaped (d=1600, vocab {VOCAB}), {n_tokens} tokens, chunks "
          f"{cfg.chunk_layers} layers x {cfg.chunk_positions} positions")  # fmt: skip
    for n_layer in depths:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n_layer), str(n_tokens)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {n_layer:2d} blocks: peak RSS of prompt_stats {res['peak_delta'] / GIB:.2f} GiB "
              f"({res['seconds']:.1f} s)")  # fmt: skip
    print(f"  predicted largest live logits tensors: {predicted_bytes(cfg, n_tokens) / GIB:.2f} GiB"
          f" (independent of depth)")  # fmt: skip
    full = 49 * n_tokens * VOCAB * 4
    print(f"  GPT-2 XL (48 blocks) unstreamed, all 49 x {n_tokens} x {VOCAB} float32 logits: "
          f"{full / GIB:.1f} GiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no eager run")
    parser.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    setup(2)
    speed(reps=2 if args.quick else 3, eager=not args.quick)
    # 6 and 10 blocks both fill whole layer chunks (states 1..L-1 are decoded, 0 and L reused):
    # equal peaks show that memory does not grow with depth.
    memory([6] if args.quick else [6, 10], 1024)


if __name__ == "__main__":
    main()
