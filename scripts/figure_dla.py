"""Rule figure_F10: direct logit attribution bars and head heatmap."""

from lenslab.figures.dla import plot_dla
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.skipped import save_skipped_figure, skipped
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

model, prompts = snakemake.wildcards.model, snakemake.wildcards.prompts
table = read_parquet(snakemake.input.table)
title = f"F10 direct logit attribution, {model}, {prompts}"
if reason := skipped(table):
    save_skipped_figure(snakemake.output.png, title, reason)
else:
    fig, caption = plot_dla(table, model)
    save_figure(fig, snakemake.output.png, title, caption)
