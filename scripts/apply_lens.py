"""Rule apply_lens: per-(layer, position) statistics of one lens on one prompt set."""

from pathlib import Path

from lenslab.extract import load_activations
from lenslab.io import write_parquet
from lenslab.joblog import start_log
from lenslab.lenses.registry import build_lens
from lenslab.models import load_model
from lenslab.prompts import encode_set
from lenslab.runtime import setup
from lenslab.stats.lens_stats import apply_lens, parse_lens_config

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
cfg = parse_lens_config(params.lens)
name = snakemake.wildcards.lens
adapter = load_model(params.model, params.model_path)
prompts = encode_set(adapter.tokenizer, params.prompts, params.model.get("prepend_bos"))
acts = load_activations(Path(snakemake.input.resid).parent)
fitted = getattr(snakemake.input, "tuned", None) or getattr(snakemake.input, "jacobian", None)
lens = build_lens(name, adapter, Path(fitted).parent if fitted else None)
table, tracked = apply_lens(lens, acts, prompts, cfg, adapter.tokenizer, lens_name=name)
write_parquet(table, snakemake.output.table)
write_parquet(tracked, snakemake.output.targets)
