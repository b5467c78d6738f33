"""Benchmark of the J-lens fit (not a test): lenslab's ``fit_jacobian`` against TransformerLens
4.3.0's ``JacobianLens.fit`` on the same model (the same HF module: TransformerLens's bridge
wraps the adapter's model) and the same token ids.

1. Speed, in one process, interleaved repetitions: TransformerLens (``dim_batch`` as given,
   source layers 0..L-2 = lenslab's resid[1..L-1]) vs lenslab with the same layers and
   ``dim_batch`` (``fit_embeddings=False``), and lenslab with resid[0] too (its default).
2. Agreement: the largest |J_lenslab - J_TL| over max |J_TL|, per layer (goal <= 1e-4), and the
   readout of a lenslab-written artifact loaded by TransformerLens (``JacobianLens.load`` +
   ``readout``) against lenslab's own readout.
3. Peak memory of one prompt's fit, in a fresh subprocess per side (after one plain forward):
   the resident-set peak (Linux VmHWM, reset through /proc/self/clear_refs just before the fit)
   minus the resident set before it.

Model: ``--model DIR`` (an HF directory with its tokenizer, e.g. results/models/embedded), else
a random GPT-2 of the embedded model's shape (6 blocks, d=128) saved to a temporary directory.
Needs transformer_lens importable (``pip install --target DIR --no-deps transformer-lens==4.3.0``
plus its light dependencies, DIR on PYTHONPATH); without it the benchmark says so and exits 0.

Run: ``python benchmarks/bench_jacobian_lens.py [--model results/models/embedded]``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lenslab.errors import LensLabError
from lenslab.gate import load_model
from lenslab.lenses.jacobian import FitSettings, fit_jacobian
from lenslab.models.tiny import WORDS, save_tiny

SKIP_FIRST = 16


def _model_dir(args: argparse.Namespace, tmp: Path) -> Path:
    if args.model:
        return Path(args.model)
    return save_tiny("gpt2", tmp / "model", n_layer=6, n_embd=128, n_head=4, n_positions=128)


def _prompts(adapter, n: int, seq_len: int) -> list[str]:
    """Held-out world text for an embedded model (its metrics.json), else random words."""
    source = Path(adapter.tokenizer.name_or_path)
    if (source / "metrics.json").is_file():
        from lenslab.embedded.corpus import heldout_text

        settings = json.loads((source / "metrics.json").read_text())["settings"]
        docs = heldout_text(settings, 40 * n)
        out, buf = [], ""
        for doc in docs:  # documents joined until a prompt is seq_len tokens long
            buf = f"{buf} {doc}".strip()
            if len(adapter.tokenizer(buf)["input_ids"]) >= seq_len:
                out.append(buf)
                buf = ""
            if len(out) == n:
                return out
        raise LensLabError("not enough held-out text", fix="lower --prompts")
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(seq_len)) for _ in range(n)]


def _setup(args: argparse.Namespace, tmp: Path):
    from lenslab.lenses.jacobian_interop import tl_bridge

    torch.set_num_threads(args.threads)
    adapter = load_model({"name": "bench", "source": str(_model_dir(args, tmp))})
    bridge = tl_bridge(adapter)
    prompts = _prompts(adapter, args.prompts, args.seq_len)
    ids = [bridge.to_tokens(p)[0, : args.seq_len].tolist() for p in prompts]
    return adapter, bridge, prompts, ids


def _fit_tl(bridge, prompts: list[str], args: argparse.Namespace):
    from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TLJacobianLens.fit(
            bridge,
            prompts,
            corpus="bench",
            dim_batch=args.dim_batch,
            max_seq_len=args.seq_len,
            skip_first_positions=SKIP_FIRST,
            show_progress=False,
        )


def _fit_ours(adapter, ids, args: argparse.Namespace, embeddings: bool):
    settings = FitSettings(SKIP_FIRST, True, args.dim_batch, fit_embeddings=embeddings)
    return fit_jacobian(adapter, ids, settings, progress=False)


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _memory_child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        adapter, bridge, prompts, ids = _setup(args, Path(tmp))
        run = {
            "transformer_lens": lambda: _fit_tl(bridge, prompts[:1], args),
            "lenslab": lambda: _fit_ours(adapter, ids[:1], args, False),
        }[args.memory_child]
        with torch.no_grad():  # warm-up: lazy imports and one forward on both models
            adapter.model(input_ids=torch.tensor(ids[:1]))
            bridge(torch.tensor(ids[:1]), return_type=None)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _rss_kb("VmRSS")
        run()
        print(json.dumps({"peak_mib": (_rss_kb("VmHWM") - before) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="HF model directory (default: random)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--dim-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        from lenslab.lenses.jacobian_interop import require_transformer_lens

        require_transformer_lens()
    except LensLabError as err:
        print(f"skipped: {err}")
        return
    if args.memory_child:
        _memory_child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        adapter, bridge, prompts, ids = _setup(args, Path(tmp))
        times: dict[str, list[float]] = {"transformer_lens": [], "lenslab": [], "lenslab+embed": []}
        for _ in range(args.reps):  # interleaved, so drifting machine load hits both
            t, tl_lens = _timed(lambda: _fit_tl(bridge, prompts, args))
            times["transformer_lens"].append(t)
            t, ours = _timed(lambda: _fit_ours(adapter, ids, args, False))
            times["lenslab"].append(t)
            t, _ = _timed(lambda: _fit_ours(adapter, ids, args, True))
            times["lenslab+embed"].append(t)
        means = ours.means()
        rel = {
            b: float((means[b + 1] - m).abs().max() / m.abs().max())
            for b, m in tl_lens.jacobians.items()
        }
        path = Path(tmp) / "lens.pt"
        ours.lens(adapter).save(path)
        from lenslab.lenses.jacobian_interop import tl_readout_agreement

        readout = tl_readout_agreement(adapter, path, ids[0], bridge)
    memory = {}
    for side in ("transformer_lens", "lenslab"):
        cmd = [sys.executable, __file__, "--memory-child", side, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        memory[side] = json.loads(out.strip().splitlines()[-1])["peak_mib"]
    best = {k: min(v) for k, v in times.items()}
    report = {
        "model": f"{adapter.n_layers} blocks, d_model {adapter.d_model}",
        "prompts": len(ids),
        "tokens_per_prompt": [len(i) for i in ids][:3],
        "dim_batch": args.dim_batch,
        "threads": args.threads,
        "seconds_best_of_reps": {k: round(v, 3) for k, v in best.items()},
        "speedup_tl_over_lenslab": round(best["transformer_lens"] / best["lenslab"], 3),
        "max_rel_diff_per_layer": {b: f"{v:.2e}" for b, v in rel.items()},
        "tl_readout_of_lenslab_artifact_max_rel_diff": f"{readout:.2e}",
        "peak_mib_one_prompt": {k: round(v, 1) for k, v in memory.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
