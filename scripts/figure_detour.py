"""Rule figure_F16b: detours through the logit lens (answer vs another word per layer)."""

from lenslab.figures.lookahead import plot_detour
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log

start_log(snakemake)  # everything this job prints goes to its rule's log

model = snakemake.wildcards.model
fig, caption = plot_detour(read_parquet(snakemake.input.targets), model, prefix_summed=True)
save_figure(fig, snakemake.output.png, "detour", caption, data=[snakemake.input.targets])
