"""Rule figure_F14: per-block cosine between residual update and negative loss gradient."""

from lenslab.figures.iterative import plot_iterative
from lenslab.figures.save import save_figure, save_skipped_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.skipped import skipped

start_log(snakemake)  # everything this job prints goes to its rule's log

model = snakemake.wildcards.model
table = read_parquet(snakemake.input.table)
what = "residual updates vs gradients"
if reason := skipped(table):  # the fidelity gate ruled the autograd path out for this model
    save_skipped_figure(snakemake.output.png, what, reason)
else:
    fig, caption = plot_iterative(table, model)
    save_figure(fig, snakemake.output.png, what, caption, data=[snakemake.input.table])
