"""Rules patching and patching_shard (F13 table): the causal-tracing sweep of one prompt set, or
of one shard of its cases, under one model. One body for both, so the fidelity gate's skip and
the job log are the same whether a set is sharded or not."""

import dataclasses
import logging

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.patching import parse_config, run_patching
from lenslab.runtime import setup
from lenslab.shards import shard_of
from lenslab.skipped import skip_reason, write_skipped_table

start_log(snakemake)  # everything this job prints goes to its rule's log

logging.basicConfig(level=logging.INFO)
setup()
params = snakemake.params
cfg = parse_config(params.patching)
adapter = load_model(params.model, params.model_path)
shard = getattr(snakemake.wildcards, "shard", None)
bounds = shard_of(params.bounds, shard) if shard is not None else None
# Kinds the fidelity gate rules out for this model are left out with a note; if none is left,
# the table is a skip marker and the figure says why.
reasons = {k: skip_reason(adapter, f"patch_{k}") for k in cfg.kinds}
if any(reasons.values()):
    print(f"patching {params.model['name']}: skipping kinds {[k for k, r in reasons.items() if r]}")
    cfg = dataclasses.replace(cfg, kinds=tuple(k for k, r in reasons.items() if not r))
if not cfg.kinds:
    write_skipped_table(snakemake.output.table, "; ".join(sorted(set(reasons.values()))))
else:
    n_cases = params.n_cases if shard is not None else None
    prepend_bos = params.model.get("prepend_bos")
    table = run_patching(adapter, params.prompts, cfg, prepend_bos, bounds=bounds, n_cases=n_cases)
    print(
        f"patching {params.model['name']}/{params.prompts['name']}: runner {set(table['runner'])}"
    )
    write_parquet(table, snakemake.output.table)
