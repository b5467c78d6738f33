"""Benchmark: AtP* over every head x position against exact head patching of the same grid.

Same process, same random GPT-2-small-shaped model (12 blocks, d=768, 12 heads, vocab 50257),
the same ``--pairs`` clean/corrupt pairs of ``--tokens`` tokens (a two-token "subject" at
positions 3-4 changed). The grid: every head (144) at every position from the first corrupted
one on (earlier positions are the same computation in both runs, every effect there is 0, and
neither method is charged for them).

- AtP*: ``lenslab.patching.atp.estimate`` with GradDrop, all pairs in one batch: one clean and
  one corrupted forward, one backward for AtP and the GradDrop passes;
- exact: ``Patcher.run`` with one ``head`` patch per grid cell (batched suffix runner),
  per pair, including each pair's clean and corrupt traces.

The ratio is taken on CPU time (process time; one thread, so it is the compute whatever else
shares the machine), wall time beside it. Reported beside the ratio: Spearman and Pearson correlation of AtP and AtP* (against |exact|)
with exact patching over the grid, and top-10 recall. Random weights: the correlations say how
the estimator behaves on this model, not on a trained GPT-2.

    python benchmarks/bench_atp.py [--threads 1] [--pairs 2] [--tokens 16] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny
from lenslab.patching.atp import Run, estimate
from lenslab.patching.atp_check import pearson, spearman
from lenslab.patching.run import Patch, Patcher
from lenslab.runtime import setup

GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
FIRST = 3  # first corrupted position


def recall(est: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    top_exact = set(np.argsort(-np.abs(exact), kind="stable")[:k])
    top_est = set(np.argsort(-np.abs(est), kind="stable")[:k])
    return len(top_exact & top_est) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    setup(args.threads)

    adapter = ModelAdapter(build_tiny("gpt2", **GPT2_SMALL), name="gpt2-small-shaped")
    gen = torch.Generator().manual_seed(0)
    L, H, T = adapter.n_layers, adapter.n_heads(), args.tokens
    runs = []
    for _ in range(args.pairs):
        clean = torch.randint(100, 50000, (T,), generator=gen)
        corrupt = clean.clone()
        corrupt[FIRST : FIRST + 2] = torch.randint(100, 50000, (2,), generator=gen)
        good, bad = torch.randint(100, 50000, (2,), generator=gen).tolist()
        runs.append(Run(tuple(clean.tolist()), tuple(corrupt.tolist()), good, bad))
    cells = [(j, h, t) for j in range(L) for h in range(H) for t in range(FIRST, T)]

    with torch.no_grad():  # warm-up: first calls allocate
        adapter.model(input_ids=torch.tensor([runs[0].clean_ids]), use_cache=False)

    start, cpu = time.perf_counter(), time.process_time()
    ests = estimate(adapter, runs, batch_size=len(runs), graddrop=True)
    t_atp, c_atp = time.perf_counter() - start, time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    exact = []
    for run in runs:
        patcher = Patcher(adapter, run.clean_ids, run.corrupt_ids, batch_size=args.batch_size)

        def ld(logits, run=run):
            return (logits[:, run.clean_answer] - logits[:, run.corrupt_answer])[:, None]

        base = float(ld(patcher.corrupt[0].logits[None])[0, 0])
        patches = [Patch("head", (j,), (t,), (h,)) for j, h, t in cells]
        exact.append(patcher.run(patches, [0] * len(cells), reduce=ld)[:, 0].double() - base)
    t_exact, c_exact = time.perf_counter() - start, time.process_time() - cpu

    exact_v = torch.cat(exact).numpy()
    atp_v = np.concatenate([[float(e.atp["head"][c]) for c in cells] for e in ests])
    star_v = np.concatenate([[float(e.graddrop["head"][c]) for c in cells] for e in ests])
    n = len(cells) * len(runs)
    print(
        f"model {adapter.name}: {L} blocks x {H} heads, d={adapter.d_model}, vocab {adapter.vocab_size}"
    )
    print(
        f"grid: {n} head patches ({L * H} heads x {T - FIRST} positions x {len(runs)} pairs of "
        f"{T} tokens), threads {args.threads}, exact batch size {args.batch_size}, "
        f"runner {patcher.runner}"
    )
    print(f"AtP* (AtP + GradDrop):               {t_atp:8.2f} s wall, {c_atp:8.2f} s CPU")
    print(f"exact head patching (suffix runner): {t_exact:8.2f} s wall, {c_exact:8.2f} s CPU")
    print(
        f"AtP   vs exact:   Spearman {spearman(atp_v, exact_v):.3f}, Pearson "
        f"{pearson(atp_v, exact_v):.3f}, top-10 recall {recall(atp_v, exact_v):.2f}"
    )
    print(
        f"AtP*  vs |exact|: Spearman {spearman(star_v, np.abs(exact_v)):.3f}, Pearson "
        f"{pearson(star_v, np.abs(exact_v)):.3f}, top-10 recall {recall(star_v, exact_v):.2f}"
    )
    # CPU time is the measure on a shared machine (one thread: CPU time is compute time,
    # whatever else runs); wall time is printed beside it.
    print(f"speed-up: {c_exact / c_atp:.1f}x CPU time, {t_exact / t_atp:.1f}x wall (goal >= 50x)")


if __name__ == "__main__":
    main()
