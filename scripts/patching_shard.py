"""Rule patching_shard: the causal-tracing sweep of one shard of a prompt set's cases.

Cases are built from the whole set (tokenising is cheap, and noise is seeded per prompt id), then
only this shard's slice is swept; gathering the shards in order gives the one-job table."""

import logging

import pandas as pd
from tqdm.auto import tqdm

from lenslab.errors import LensLabError
from lenslab.io import write_parquet
from lenslab.models import load_model
from lenslab.patching import parse_config
from lenslab.patching.sweep import build_cases, patch_case
from lenslab.runtime import setup
from lenslab.shards import shard_of

logging.basicConfig(level=logging.INFO)
setup()
params = snakemake.params
cfg = parse_config(params.patching)
adapter = load_model(params.model, params.model_path)
cases = build_cases(adapter, params.prompts, cfg, params.model.get("prepend_bos"))
if len(cases) != params.n_cases:
    raise LensLabError(
        f"prompt set {params.prompts['name']!r} gives {len(cases)} patching cases, but its shards "
        f"were planned for {params.n_cases}",
        fix="check that every pair's prompts exist and that noise-mode prompts have a subject",
    )
start, stop = shard_of(params.bounds, snakemake.wildcards.shard)
tables = [
    patch_case(adapter, case, cfg)
    for case in tqdm(cases[start:stop], desc=f"patching shard {snakemake.wildcards.shard}")
]
write_parquet(pd.concat(tables, ignore_index=True), snakemake.output.table)
