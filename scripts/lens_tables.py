"""Rule lens_tables: per-layer means with confidence intervals, lens-vs-lens differences and
tracked-token summaries of every lens applied to one prompt set."""

import pandas as pd

from lenslab.io import read_parquet, write_parquet
from lenslab.joblog import start_log
from lenslab.runtime import setup
from lenslab.stats.aggregate import compare_lenses, layer_means, target_means
from lenslab.stats.config import parse_lens_config

start_log(snakemake)  # everything this job prints goes to its rule's log

setup(uses_torch=False)
cfg = parse_lens_config(snakemake.params.lens)
table = pd.concat([read_parquet(p) for p in snakemake.input.tables], ignore_index=True)
tracked = pd.concat([read_parquet(p) for p in snakemake.input.targets], ignore_index=True)
kw = dict(ci=cfg.ci, n_boot=cfg.n_boot, seed=cfg.seed)
write_parquet(layer_means(table, **kw), snakemake.output.means)
write_parquet(compare_lenses(table, **kw), snakemake.output.compare)
write_parquet(target_means(tracked, **kw), snakemake.output.targets)
