"""Rules figure_F2 .. figure_F6: one logit-lens view of the first (or chosen) prompt of a set."""

from lenslab.figures.logit_lens import make_view
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.runtime import setup
from lenslab.stats.config import parse_lens_config

start_log(snakemake)  # everything this job prints goes to its rule's log

setup()
params = snakemake.params
fig, title, caption = make_view(
    params.fid,
    read_parquet(snakemake.input.table),
    read_parquet(snakemake.input.targets),
    read_parquet(snakemake.input.means),
    params.options,
    parse_lens_config(params.lens),
)
save_figure(fig, snakemake.output.png, title, f"{caption} Model: {snakemake.wildcards.model}.")
