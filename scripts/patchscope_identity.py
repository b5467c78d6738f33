"""Rule patchscope_identity (F11 table): token-identity patchscope vs lenses on one prompt set."""

from lenslab.gate import load_model
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.catalog import fitted_dir
from lenslab.lenses.registry import build_lens
from lenslab.options import IdentityOptions, parse_options
from lenslab.patchscopes.config import run_identity
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
opts = parse_options(IdentityOptions, params.options)
adapter = load_model(params.model, params.model_path)
lenses = {
    name: build_lens(name, adapter, fitted_dir(snakemake.input, name)) for name in params.lenses
}
table = run_identity(adapter, params.prompts, opts, lenses, params.model.get("prepend_bos"))
write_parquet(table, snakemake.output.table)
