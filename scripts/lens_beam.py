"""Rule lens_beam (F16c table): beams over the logit lens from every layer."""

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.logit import LogitLens
from lenslab.lookahead import run_beam
from lenslab.options import BeamOptions, parse_options
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
opts = parse_options(BeamOptions, params.options)
adapter = load_model(params.model, params.model_path)
table = run_beam(LogitLens(adapter), params.prompts, opts, params.model.get("prepend_bos"))
write_parquet(table, snakemake.output.table)
