"""Rule visibility (F15 table): influence between all hidden states of one prompt."""

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.runtime import setup
from lenslab.skipped import skip_reason, write_skipped_table
from lenslab.visibility import visibility_table

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
adapter = load_model(params.model, params.model_path)
reason = skip_reason(adapter, "visibility")
if reason:  # the fidelity gate rules F15 out for this model: say so, build the rest
    write_skipped_table(snakemake.output.table, reason)
else:
    table = visibility_table(
        adapter, params.prompts, params.prompt, params.normalise, params.model.get("prepend_bos")
    )
    write_parquet(table, snakemake.output.table)
