"""Rule patching (F13 table): the causal-tracing sweep of one prompt set under one model."""

import logging

from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.models import load_model
from lenslab.patching import parse_config, run_patching
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

logging.basicConfig(level=logging.INFO)
setup()
params = snakemake.params
cfg = parse_config(params.patching)
adapter = load_model(params.model, params.model_path)
table = run_patching(adapter, params.prompts, cfg, params.model.get("prepend_bos"))
print(f"patching {params.model['name']}/{params.prompts['name']}: runner {set(table['runner'])}")
write_parquet(table, snakemake.output.table)
