"""Rule iterative (F14 table): residual updates vs loss gradients for one prompt set."""

from lenslab.io import write_parquet
from lenslab.iterative import iterative_table
from lenslab.models import load_model
from lenslab.runtime import setup

setup()
params = snakemake.params
adapter = load_model(params.model, params.model_path)
table = iterative_table(adapter, params.prompts, params.model.get("prepend_bos"))
write_parquet(table, snakemake.output.table)
