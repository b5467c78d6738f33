"""Rule patchscope_entities (F12 table): entity resolution by greedy patched generation."""

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.options import EntityOptions, parse_options
from lenslab.patchscopes.config import run_entities
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
opts = parse_options(EntityOptions, params.options)
adapter = load_model(params.model, params.model_path)
table = run_entities(adapter, params.prompts, opts, params.model.get("prepend_bos"))
write_parquet(table, snakemake.output.table)
