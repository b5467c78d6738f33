"""Rule detour (F16b table): logit-lens probability of the answer and the other tracked words
at the last position, summed over each word's prefix tokens (Wendler et al. 2024)."""

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.logit import LogitLens
from lenslab.lookahead import detour_table
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
adapter = load_model(params.model, params.model_path)
table = detour_table(LogitLens(adapter), params.prompts, params.model.get("prepend_bos"))
write_parquet(table, snakemake.output.table)
