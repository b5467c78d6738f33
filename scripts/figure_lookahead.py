"""Rule figure_F16: look-ahead through the logit lens (tokens t+1, t+2, ... in the top 5)."""

from lenslab.figures.lookahead import plot_lookahead
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

model = snakemake.wildcards.model
table = read_parquet(snakemake.input.table)
fig, caption = plot_lookahead(table, model, snakemake.params.max_ahead)
save_figure(fig, snakemake.output.png, "look-ahead", caption, data=[snakemake.input.table])
