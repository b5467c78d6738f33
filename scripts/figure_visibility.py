"""Rule figure_F15: what one hidden state sees and reaches."""

from lenslab.figures.save import save_figure
from lenslab.figures.visibility import plot_visibility
from lenslab.io import read_parquet
from lenslab.skipped import save_skipped_figure, skipped
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

model, prompts = snakemake.wildcards.model, snakemake.wildcards.prompts
table = read_parquet(snakemake.input.table)
title = f"F15 visibility, {model}, {prompts}"
if reason := skipped(table):
    save_skipped_figure(snakemake.output.png, title, reason)
else:
    fig, caption = plot_visibility(table, snakemake.params.layer, snakemake.params.position, model)
    save_figure(fig, snakemake.output.png, title, caption)
