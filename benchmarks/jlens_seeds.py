"""Does the J-lens comparison hold whatever the seed? (not a test)

For each seed: train an embedded model (``--model embedded`` or ``embedded-test``, settings from
conf/model/<name>.yaml with the seed replaced; an existing ``--work``/<model>-seed<N> directory
is reused), train its tuned lens and fit its J-lens with the pipeline's default settings
(conf/tuned_lens, conf/jacobian_lens), and compare the three lenses on the held-out evaluation
text with the pipeline's code (lenslab.lenses.jacobian_eval). Prints KL(final || lens) and
top-1 agreement per layer for every seed and the J-lens findings (lenslab.findings).

    python benchmarks/jlens_seeds.py --model embedded-test --seeds 0 1 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def measure(model: str, seed: int, work: Path, threads: int) -> pd.DataFrame:
    import torch
    from omegaconf import OmegaConf

    from lenslab.embedded.train import train_embedded_model
    from lenslab.gate import load_model
    from lenslab.lenses.jacobian import FitSettings, fit_jacobian
    from lenslab.lenses.jacobian_config import parse_jacobian_settings
    from lenslab.lenses.jacobian_eval import compare_lenses
    from lenslab.lenses.logit import LogitLens
    from lenslab.lenses.tuned_config import load_documents, make_windows, parse_settings
    from lenslab.lenses.tuned_train import train_tuned_lens

    torch.set_num_threads(threads)
    model_cfg = OmegaConf.to_container(OmegaConf.load(REPO / f"conf/model/{model}.yaml"))
    model_cfg["embedded"] = {**model_cfg["embedded"], "seed": seed, "num_threads": threads}
    model_dir = work / f"{model}-seed{seed}"
    if not (model_dir / "metrics.json").exists():
        train_embedded_model(model_cfg["embedded"], model_dir, progress=False)
    adapter = load_model(model_cfg, path=model_dir)

    def conf(name: str) -> dict:
        return OmegaConf.to_container(OmegaConf.load(REPO / f"conf/{name}/default.yaml"))

    tuned_s, jlens_s = (
        parse_settings(conf("tuned_lens")),
        parse_jacobian_settings(conf("jacobian_lens")),
    )
    seq = tuned_s.train.seq_len
    train_docs = load_documents(tuned_s.text, model_cfg, "train", model_dir)
    tuned, _ = train_tuned_lens(
        adapter, make_windows(adapter.tokenizer, train_docs, seq), tuned_s.train, progress=False
    )
    f = jlens_s.fit
    windows = make_windows(adapter.tokenizer, train_docs, f.seq_len)[: f.n_prompts].tolist()
    start = time.perf_counter()
    settings = FitSettings(f.skip_first, f.skip_last, f.dim_batch, f.fit_embeddings)
    jlens = fit_jacobian(adapter, windows, settings, progress=False).lens(adapter)
    fit_s = time.perf_counter() - start
    eval_docs = load_documents(jlens_s.text, model_cfg, "eval", model_dir)
    table = compare_lenses(
        adapter,
        {"logit": LogitLens(adapter), "tuned": tuned, "jacobian": jlens},
        make_windows(adapter.tokenizer, eval_docs, f.seq_len),
        jlens_s.eval,
    )
    table.insert(0, "seed", seed)
    table["fit_seconds"] = round(fit_s, 1)
    return table


def main() -> None:
    from lenslab.findings import jacobian_lens_findings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded-test", choices=["embedded", "embedded-test"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default=str(REPO / "results/jlens_seeds"))
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)
    for seed in args.seeds:
        table = measure(args.model, seed, work, args.threads)
        table.to_parquet(work / f"{args.model}-seed{seed}.parquet")
        print(f"\n== {args.model} seed {seed} (J-lens fit {table.fit_seconds.iloc[0]} s)")
        for metric in ("kl", "top1"):
            wide = table[table.metric == metric].pivot(
                index="layer", columns="lens", values="value"
            )
            print(metric, "\n", wide.round(4).to_string())
        for finding in jacobian_lens_findings(table, "jacobian_lens eval"):
            print(finding.row())


if __name__ == "__main__":
    main()
