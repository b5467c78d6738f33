"""Rules figure_F2 .. figure_F6: one logit-lens view of the first (or chosen) prompt of a set."""

from lenslab.figures.interactive import lens_views
from lenslab.figures.logit_lens import make_view
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.runtime import setup
from lenslab.stats.config import parse_lens_config

start_log(snakemake)  # everything this job prints goes to its rule's log

setup(uses_torch=False)
params, inputs = snakemake.params, snakemake.input
table = read_parquet(inputs.table)
cfg = parse_lens_config(params.lens)
fig, title, caption = make_view(
    params.fid, table, read_parquet(inputs.targets), read_parquet(inputs.means), params.options, cfg
)
save_figure(
    fig,
    snakemake.output.png,
    title,
    caption,
    data=[inputs.table, inputs.targets, inputs.means],
    interactive=lens_views(params.fid, table, params.options, cfg),
)
