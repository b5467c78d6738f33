"""Rule figure_F1: plot the first pair of the F1 table."""

from lenslab.figures.difference import plot_difference
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

table = read_parquet(snakemake.input.table)
pair = snakemake.params.options.get("pair") or table["pair"].iloc[0]
rows = table[table["pair"] == pair]
clean, corrupt = pair.split("|")
model = snakemake.wildcards.model
what = f"hidden-state difference, {clean} vs {corrupt}"
caption = (
    f"L2 norm of h_clean - h_corrupt for every residual state of model {model} "
    f"(pair {clean} vs {corrupt}; tokens shown as clean/corrupt where they differ, '·' = space). "
    "Rows: layer 0 (embeddings) to layer L (the last block's output, before the final norm), "
    "and 'final norm(layer L)' = the final norm applied to layer L, which is what HF's "
    "output_hidden_states returns last (seed 000's last row). Positions whose prefix is "
    "identical are exactly 0 under causal attention. Mean and std of the difference over the "
    "hidden dimension are in the table (its `row` column is the layer; `state` names it "
    "embed, block 1..L, final norm)."
)
fig = plot_difference(rows, what)
save_figure(fig, snakemake.output.png, what, caption, data=[snakemake.input.table])
