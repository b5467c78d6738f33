"""Rule figure_F13: causal-tracing heatmaps (F13) and token-category curves (F13b)."""

from lenslab.figures.interactive import patching_views
from lenslab.figures.patching import heatmap_panels, plot_categories, plot_heatmaps
from lenslab.figures.save import save_figure, save_skipped_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.skipped import skipped

start_log(snakemake)  # everything this job prints goes to its rule's log

table = read_parquet(snakemake.input.table)
opts = snakemake.params.options
model = snakemake.wildcards.model
data = [snakemake.input.table]
metric = opts.get("metric", "norm_ld")
window = opts.get("window")
what, what_b = "causal tracing", "causal effect by token category"
out = snakemake.output
if reason := skipped(table):  # the fidelity gate ruled patching out for this model
    save_skipped_figure(out.heatmap, what, reason)
    save_skipped_figure(out.categories, what_b, reason)
else:
    ids, n_max = opts.get("prompt_ids"), opts.get("max_prompts", 2)
    fig, caption = plot_heatmaps(table, metric, window, ids, n_max, model)
    views = patching_views(heatmap_panels(table, metric, window, ids, n_max))
    save_figure(fig, out.heatmap, what, caption, data=data, interactive=views)
    fig, caption = plot_categories(table, metric, window, model)
    save_figure(fig, out.categories, what_b, caption, data=data)
