"""Benchmark: full residual-stream patching sweep, batched suffix runner vs the naive loop.

Same process, same random GPT-2-small-shaped model (12 blocks, d=768, vocab 50257), one
16-token clean/corrupt pair; the sweep restores the block output at every (layer, position):
12 x 16 = 192 patched runs.

- batched: ``Patcher.run`` (suffix runner: starts each patch from the cached corrupt
  ``resid[l+1]``, stacks ``--batch-size`` patched runs per forward, decodes the last position);
- naive: ``lenslab.patching.reference.naive_patch``, one full hooked forward per patch.

The naive loop is timed on every ``--naive-stride``-th patch (each of its calls costs the same
full forward, whatever is patched) and scaled to the 192 patches; ``--naive-stride 1`` times
all of them. The values of the timed patches are checked against the batched run.

    python benchmarks/bench_patching.py [--threads 1] [--batch-size 64] [--naive-stride 4]
"""

from __future__ import annotations

import argparse
import time

import torch

import lenslab.gate  # noqa: F401 - registers the fidelity gate that methods consult
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny
from lenslab.patching.reference import clean_states, naive_patch
from lenslab.patching.run import Patch, Patcher
from lenslab.runtime import setup

GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--naive-stride", type=int, default=4)
    args = parser.parse_args()
    setup(args.threads)

    adapter = ModelAdapter(build_tiny("gpt2", **GPT2_SMALL), name="gpt2-small-shaped")
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(100, 50000, (args.tokens,), generator=gen)
    corrupt = clean.clone()
    corrupt[3:5] = torch.randint(100, 50000, (2,), generator=gen)  # a two-token "subject"
    L, T = adapter.n_layers, args.tokens
    patches = [Patch("resid", (layer,), (t,)) for layer in range(L) for t in range(T)]

    with torch.no_grad():  # warm-up: first calls allocate
        adapter.model(input_ids=clean[None], use_cache=False)

    start = time.perf_counter()
    patcher = Patcher(adapter, clean, corrupt_ids=corrupt, batch_size=args.batch_size)
    batched = patcher.run(patches, [0] * len(patches))
    t_batched = time.perf_counter() - start

    timed = patches[:: args.naive_stride]
    start = time.perf_counter()
    states = clean_states(adapter, clean)
    naive = torch.stack([naive_patch(adapter, states, corrupt, p) for p in timed])
    t_naive = (time.perf_counter() - start) * len(patches) / len(timed)

    err = float((batched[:: args.naive_stride] - naive).abs().max())
    print(f"model {adapter.name}: {L} blocks, d={adapter.d_model}, vocab {adapter.vocab_size}")
    print(
        f"sweep: {len(patches)} residual patches ({L} layers x {T} positions), "
        f"threads {args.threads}, batch size {args.batch_size}, runner {patcher.runner}"
    )
    print(f"batched suffix runner: {t_batched:8.2f} s (clean + corrupt traces included)")
    note = "" if args.naive_stride == 1 else f" (timed {len(timed)} patches, scaled)"
    print(f"naive serial loop:     {t_naive:8.2f} s{note}")
    print(f"max |logit difference| batched vs naive: {err:.2e}")
    print(f"speed-up: {t_naive / t_batched:.1f}x (goal >= 4x)")


if __name__ == "__main__":
    main()
