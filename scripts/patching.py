"""Rule patching (F13 table): the causal-tracing sweep of one prompt set under one model."""

import dataclasses
import logging

from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.models import load_model
from lenslab.patching import parse_config, run_patching
from lenslab.runtime import setup
from lenslab.skipped import skip_reason, write_skipped_table

start_log(snakemake)  # everything this job prints goes to its rule's log

logging.basicConfig(level=logging.INFO)
setup()
params = snakemake.params
cfg = parse_config(params.patching)
adapter = load_model(params.model, params.model_path)
# Kinds the fidelity gate rules out for this model are left out with a note; if none is left,
# the table is a skip marker and the figure says why.
reasons = {k: skip_reason(adapter, f"patch_{k}") for k in cfg.kinds}
if any(reasons.values()):
    print(f"patching {params.model['name']}: skipping kinds {[k for k, r in reasons.items() if r]}")
    cfg = dataclasses.replace(cfg, kinds=tuple(k for k, r in reasons.items() if not r))
if not cfg.kinds:
    write_skipped_table(snakemake.output.table, "; ".join(sorted(set(reasons.values()))))
else:
    table = run_patching(adapter, params.prompts, cfg, params.model.get("prepend_bos"))
    runners = set(table["runner"])
    print(f"patching {params.model['name']}/{params.prompts['name']}: runner {runners}")
    write_parquet(table, snakemake.output.table)
