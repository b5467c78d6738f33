"""Benchmark: token-identity patchscope over every (layer, position), batched vs a naive loop;
and patched generation (F12) with the prompt's keys and values cached vs rerun per token.

Same process, same random GPT-2-small-shaped model (12 blocks, d=768, vocab 50257), one
``--tokens``-token source prompt and a 12-token target prompt; the patchscope reads every source
cell (13 residual states x T positions) through the target at l* = l:

- batched: ``lenslab.patchscopes.token_identity`` (one source run; patched rows stacked
  ``--batch-size`` per forward, hooks on every target layer in one pass; only the read position
  is unembedded);
- naive: one hooked forward of the target per (layer, position), written here independently
  (a forward hook on block l-1, or a pre-hook on block 0, replaces one state), full logits.

The naive loop is timed on every ``--naive-stride``-th cell (each call costs the same forward)
and scaled to all cells; the timed cells' top-1 must equal the batched run's.

Generation: the last source token's 13 states patched into the target's last position, greedy
``--new-tokens`` tokens per row, ``patched_generate`` with ``use_cache=True`` (the default) vs
``False`` (the whole patched sequence rerun for every token); the tokens must be identical.

    python benchmarks/bench_patchscopes.py [--threads 1] [--tokens 16] [--naive-stride 2]
"""

from __future__ import annotations

import argparse
import time

import torch

import lenslab.gate  # noqa: F401 - registers the fidelity gate that methods consult
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import build_tiny
from lenslab.patchscopes import SourcePrompt, patched_generate, source_run, token_identity
from lenslab.runtime import setup

GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)


@torch.no_grad()
def naive_cell(adapter: ModelAdapter, target: torch.Tensor, layer: int, vec: torch.Tensor) -> int:
    """One patched forward: ``vec`` over resid[layer] at the target's last position."""

    def put(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        h[:, -1] = vec
        return h

    if layer == 0:
        handle = adapter.blocks[0].register_forward_pre_hook(
            lambda _m, args: (put(args[0]), *args[1:])
        )
    else:
        handle = adapter.blocks[layer - 1].register_forward_hook(
            lambda _m, _a, out: (put(out[0]), *out[1:]) if isinstance(out, tuple) else put(out)
        )
    try:
        return int(adapter.model(input_ids=target[None]).logits[0, -1].argmax())
    finally:
        handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--naive-stride", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=20)
    args = parser.parse_args()
    setup(args.threads)
    adapter = ModelAdapter(build_tiny("gpt2", **GPT2_SMALL), name="gpt2-small-shaped")
    gen = torch.Generator().manual_seed(0)
    source = torch.randint(100, 50000, (args.tokens,), generator=gen).tolist()
    target = torch.randint(100, 50000, (12,), generator=gen)
    with torch.no_grad():  # warm-up: first calls allocate
        adapter.model(input_ids=target[None])

    start = time.perf_counter()
    table = token_identity(
        adapter, [SourcePrompt("s", source)], target.tolist(), batch_size=args.batch_size
    )
    t_batched = time.perf_counter() - start

    _, resid = source_run(adapter, source)
    cells = [(layer, t) for t in range(args.tokens) for layer in range(adapter.n_layers + 1)]
    timed = cells[:: args.naive_stride]
    start = time.perf_counter()
    naive = {(la, t): naive_cell(adapter, target, la, resid[la, t]) for la, t in timed}
    t_naive = (time.perf_counter() - start) * len(cells) / len(timed)

    batched = table.set_index(["layer", "position"])["pred_id"]
    agree = all(batched[cell] == pred for cell, pred in naive.items())
    print(f"cells: {len(cells)} ({adapter.n_layers + 1} states x {args.tokens} positions)")
    print(f"batched: {t_batched:.2f} s; naive loop: {t_naive:.2f} s (from {len(timed)} cells)")
    print(f"top-1 identical on the timed cells: {agree}")
    print(f"ratio (naive / batched): {t_naive / t_batched:.1f}x   (goal >= 4x)")
    if not agree:
        raise SystemExit("batched and naive patchscopes disagree")
    generation(adapter, target.tolist(), resid[:, -1], args.new_tokens)


def generation(adapter: ModelAdapter, target: list[int], vecs: torch.Tensor, n_new: int) -> None:
    layers = list(range(adapter.n_layers + 1))
    times, tokens = {}, {}
    for cache in (True, False):
        start = time.perf_counter()
        tokens[cache] = patched_generate(adapter, target, -1, layers, vecs, n_new, use_cache=cache)
        times[cache] = time.perf_counter() - start
    same = tokens[True] == tokens[False]
    print(
        f"generation, {len(layers)} rows x {n_new} tokens: cached {times[True]:.2f} s; "
        f"rerun {times[False]:.2f} s; tokens identical: {same}"
    )
    print(f"ratio (rerun / cached): {times[False] / times[True]:.1f}x")
    if not same:
        raise SystemExit("cached and rerun generation disagree")


if __name__ == "__main__":
    main()
