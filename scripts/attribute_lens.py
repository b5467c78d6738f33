"""Rule attribute_lens (F9 tables): one LRE per relation and layer, faithfulness, view."""

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.attribute import save_attribute_lenses
from lenslab.options import AttributeOptions, parse_options
from lenslab.relations import run_attribute
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
opts = parse_options(AttributeOptions, params.options)
adapter = load_model(params.model, params.model_path)
lenses, table, summary, view = run_attribute(
    adapter, params.prompts, opts, params.model.get("prepend_bos"), progress=True
)
save_attribute_lenses(lenses, snakemake.output.lenses)
write_parquet(table, snakemake.output.table)
write_parquet(summary, snakemake.output.summary)
write_parquet(view, snakemake.output.view)
