"""Rule figure_F16b: detours through the logit lens (answer vs another word per layer)."""

from lenslab.figures.lookahead import plot_detour
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet

model = snakemake.wildcards.model
fig, caption = plot_detour(read_parquet(snakemake.input.targets), model)
save_figure(fig, snakemake.output.png, "detour", caption, data=[snakemake.input.targets])
