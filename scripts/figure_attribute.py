"""Rule figure_F9: attribute lens faithfulness per layer and the lens over a text."""

from lenslab.figures.attribute import plot_attribute
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.options import AttributeOptions, parse_options

start_log(snakemake)  # everything this job prints goes to its rule's log

model, prompts = snakemake.wildcards.model, snakemake.wildcards.prompts
opts = parse_options(AttributeOptions, snakemake.params.options)
summary = read_parquet(snakemake.input.summary)
view = read_parquet(snakemake.input.view)
relation = opts.view_relation or sorted(summary["relation"].unique())[0]
fig, caption = plot_attribute(summary, view, model, opts.beta, relation, opts.n_train)
data = [snakemake.input.summary, snakemake.input.view]
save_figure(fig, snakemake.output.png, "attribute lens", caption, data=data)
