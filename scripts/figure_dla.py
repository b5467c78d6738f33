"""Rule figure_F10: direct logit attribution bars and head heatmap."""

from lenslab.figures.dla import plot_dla
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet

model = snakemake.wildcards.model
fig, caption = plot_dla(read_parquet(snakemake.input.table), model)
save_figure(
    fig, snakemake.output.png, "direct logit attribution", caption, data=[snakemake.input.table]
)
