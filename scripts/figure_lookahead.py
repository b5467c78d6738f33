"""Rule figure_F16: look-ahead through the logit lens (tokens t+1, t+2, ... in the top 5)."""

from lenslab.figures.lookahead import plot_lookahead
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

model, prompts = snakemake.wildcards.model, snakemake.wildcards.prompts
table = read_parquet(snakemake.input.table)
fig, caption = plot_lookahead(table, model, snakemake.params.max_ahead)
save_figure(fig, snakemake.output.png, f"F16 look-ahead, {model}, {prompts}", caption)
