"""Rule patchscope_identity (F11 table): token-identity patchscope vs lenses on one prompt set."""

from pathlib import Path

from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.registry import build_lens
from lenslab.models import load_model
from lenslab.options import IdentityOptions, parse_options
from lenslab.patchscopes.config import run_identity
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
opts = parse_options(IdentityOptions, params.options)
adapter = load_model(params.model, params.model_path)
# fitted lenses read their files from their own directories (tuned: params.pt, jacobian: lens.pt)
fitted = {k: getattr(snakemake.input, k, None) for k in ("tuned", "jacobian")}
dirs = {k: Path(path).parent for k, path in fitted.items() if path}
lenses = {name: build_lens(name, adapter, dirs.get(name)) for name in params.lenses}
table = run_identity(adapter, params.prompts, opts, lenses, params.model.get("prepend_bos"))
write_parquet(table, snakemake.output.table)
