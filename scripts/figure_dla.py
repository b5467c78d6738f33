"""Rule figure_F10: direct logit attribution bars and head heatmap."""

from lenslab.figures.dla import plot_dla
from lenslab.figures.save import save_figure, save_skipped_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.skipped import skipped

start_log(snakemake)  # everything this job prints goes to its rule's log

model = snakemake.wildcards.model
table = read_parquet(snakemake.input.table)
what = "direct logit attribution"
if reason := skipped(table):  # the fidelity gate ruled DLA out for this model
    save_skipped_figure(snakemake.output.png, what, reason)
else:
    fig, caption = plot_dla(table, model)
    save_figure(fig, snakemake.output.png, what, caption, data=[snakemake.input.table])
