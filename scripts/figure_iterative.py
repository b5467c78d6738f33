"""Rule figure_F14: per-block cosine between residual update and negative loss gradient."""

from lenslab.figures.iterative import plot_iterative
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet

model = snakemake.wildcards.model
fig, caption = plot_iterative(read_parquet(snakemake.input.table), model)
what = "residual updates vs gradients"
save_figure(fig, snakemake.output.png, what, caption, data=[snakemake.input.table])
