"""Rule figure_F16c: the best beam continuation read from each layer."""

from lenslab.figures.lookahead import plot_beam
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.options import BeamOptions, parse_options

start_log(snakemake)  # everything this job prints goes to its rule's log

model, prompts = snakemake.wildcards.model, snakemake.wildcards.prompts
opts = parse_options(BeamOptions, snakemake.params.options)
fig, caption = plot_beam(
    read_parquet(snakemake.input.table), model, "logit", opts.width, opts.depth
)
data = [snakemake.input.table]
save_figure(fig, snakemake.output.png, "beam over the logit lens", caption, data=data)
