"""Rule figure_F16b: detours through the logit lens (answer vs another word per layer)."""

from lenslab.figures.lookahead import plot_detour
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet

model, prompts = snakemake.wildcards.model, snakemake.wildcards.prompts
fig, caption = plot_detour(read_parquet(snakemake.input.targets), model, prefix_summed=True)
save_figure(fig, snakemake.output.png, f"F16b detour, {model}, {prompts}", caption)
