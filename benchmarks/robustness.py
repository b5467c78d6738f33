"""Do the embedded model's findings hold whatever the seed and thread count?

Trains the default embedded model (conf/model/embedded.yaml) for every seed x thread count,
then measures every finding the README reports with the same code the pipeline's `findings`
rule uses (lenslab.findings): accuracies, ROME's contrast on the F13 prompt set, facts
emerging over depth under the logit lens, and the tuned lens below the logit lens. Prints one
row per (seed, threads) and whether each finding holds; writes the table to --out.

Not part of CI (each run trains a model: 2-4 minutes on 2 cores):

    python benchmarks/robustness.py --seeds 0 1 2 3 --threads 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def measure(seed: int, threads: int, work: Path, extra: dict) -> pd.DataFrame:
    """Train one model and compute its findings table (in this process: ``threads`` threads)."""
    import torch
    from omegaconf import OmegaConf

    from lenslab import findings
    from lenslab.embedded.train import train_embedded_model
    from lenslab.extract import extract
    from lenslab.gate import load_model
    from lenslab.lenses.logit import LogitLens
    from lenslab.lenses.tuned_config import load_documents, make_windows, parse_settings
    from lenslab.lenses.tuned_eval import evaluate_lenses
    from lenslab.lenses.tuned_train import train_tuned_lens
    from lenslab.patching import parse_config, run_patching
    from lenslab.prompts import encode_set
    from lenslab.stats.lens_stats import apply_lens, parse_lens_config

    torch.set_num_threads(threads)
    conf = OmegaConf.load(REPO / "conf/model/embedded.yaml")
    model_cfg = OmegaConf.to_container(conf, resolve=True)
    settings = {**model_cfg["embedded"], "seed": seed, "num_threads": threads, **extra}
    model_dir = work / f"seed{seed}-t{threads}"
    if not (model_dir / "metrics.json").exists():
        train_embedded_model(settings, model_dir, progress=False)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    model_cfg["embedded"] = settings
    adapter = load_model(model_cfg, path=model_dir)

    def prompt_set(name: str) -> dict:
        return OmegaConf.to_container(OmegaConf.load(REPO / f"conf/prompts/{name}.yaml"))

    patch_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf/patching/default.yaml"))
    out = findings.training_findings(metrics)
    rome = prompt_set("embedded_rome")
    for mode in ("pairs", "noise"):
        cfg = parse_config({**patch_cfg, "mode": mode, "kinds": ["resid"]})
        table = run_patching(adapter, rome, cfg, progress=False)
        out += [
            f.__class__(**{**f.__dict__, "finding": f"{f.finding}_{mode}"})
            for f in findings.rome_findings(table, "patching")
        ]
    facts = prompt_set("embedded_facts")
    encoded = encode_set(adapter.tokenizer, facts)
    acts = extract(adapter, encoded)
    lens_cfg = parse_lens_config(
        OmegaConf.to_container(OmegaConf.load(REPO / "conf/lens/default.yaml"))
    )
    _, tracked = apply_lens(LogitLens(adapter), acts, encoded, lens_cfg, adapter.tokenizer, "logit")
    out += findings.emergence_findings(tracked, "lens")

    tuned_settings = parse_settings(
        OmegaConf.to_container(OmegaConf.load(REPO / "conf/tuned_lens/default.yaml"))
    )
    seq = tuned_settings.train.seq_len
    train_docs = load_documents(tuned_settings.text, model_cfg, "train", model_dir)
    lens, _ = train_tuned_lens(
        adapter, make_windows(adapter.tokenizer, train_docs, seq), tuned_settings.train
    )
    eval_docs = load_documents(tuned_settings.text, model_cfg, "eval", model_dir)
    evaluation = evaluate_lenses(
        adapter,
        {"logit": LogitLens(adapter), "tuned": lens},
        make_windows(adapter.tokenizer, eval_docs, seq),
        tuned_settings.eval,
    )
    out += findings.tuned_lens_findings(evaluation, "tuned_lens")
    table = findings.findings_table(out, "embedded")
    table.insert(1, "seed", seed)
    table.insert(2, "threads", threads)
    table["stage1_steps_run"] = metrics["stage1_steps_run"]
    return table


def _child(args: argparse.Namespace) -> None:
    table = measure(args.seed, args.one_threads, Path(args.work), json.loads(args.extra))
    table.to_parquet(Path(args.work) / f"findings-seed{args.seed}-t{args.one_threads}.parquet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each its own process)")
    p.add_argument("--work", default=str(REPO / "results/robustness"))
    p.add_argument(
        "--out", default=None, help="findings table (Parquet); default: WORK/all.parquet"
    )
    p.add_argument("--extra", default="{}", help="JSON: embedded settings to override")
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--one-threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.seed is not None:  # one run, in a process of its own (thread count is per process)
        return _child(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = [(s, t) for s in args.seeds for t in args.threads]

    def run(st: tuple[int, int]) -> None:
        seed, threads = st
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "--work", str(work), "--extra", args.extra]
        cmd += ["--seed", str(seed), "--one-threads", str(threads)]
        subprocess.run(cmd, check=True, env=env)
        print(f"done: seed {seed}, {threads} thread(s)", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, runs))
    table = pd.concat(
        [pd.read_parquet(work / f"findings-seed{s}-t{t}.parquet") for s, t in runs],
        ignore_index=True,
    )
    table.to_parquet(args.out or work / "all.parquet")
    wide = table.pivot_table(index=["seed", "threads"], columns="finding", values="value")
    pd.set_option("display.width", 250)
    print(wide.round(3).to_string())
    bad = table[~table["holds"]]
    print(f"\n{len(table) - len(bad)} of {len(table)} checks hold")
    if len(bad):
        print(bad[["seed", "threads", "finding", "value", "op", "threshold"]].to_string())


if __name__ == "__main__":
    main()
