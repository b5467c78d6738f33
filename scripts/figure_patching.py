"""Rule figure_F13: causal-tracing heatmaps (F13) and token-category curves (F13b)."""

from lenslab.figures.patching import plot_categories, plot_heatmaps
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.skipped import save_skipped_figure, skipped
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

table = read_parquet(snakemake.input.table)
opts = snakemake.params.options
model, prompts = snakemake.wildcards.model, snakemake.wildcards.prompts
metric = opts.get("metric", "norm_ld")
window = opts.get("window")
title = f"F13 causal tracing, {model}, {prompts}"
title_b = f"F13b causal effect by token category, {model}, {prompts}"
if reason := skipped(table):  # the fidelity gate ruled patching out for this model
    save_skipped_figure(snakemake.output.heatmap, title, reason)
    save_skipped_figure(snakemake.output.categories, title_b, reason)
else:
    fig, caption = plot_heatmaps(
        table, metric, window, opts.get("prompt_ids"), opts.get("max_prompts", 2), model
    )
    save_figure(fig, snakemake.output.heatmap, title, caption)
    fig, caption = plot_categories(table, metric, window, model)
    save_figure(fig, snakemake.output.categories, title_b, caption)
