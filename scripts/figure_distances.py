"""Rule figure_F17: per-layer comparison of six distances between each layer and the output."""

from lenslab.figures.distances import make_distances
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.runtime import setup
from lenslab.stats.config import parse_lens_config

start_log(snakemake)  # everything this job prints goes to its rule's log

setup(uses_torch=False)
params = snakemake.params
fig, title, caption = make_distances(
    read_parquet(snakemake.input.means),
    params.options,
    parse_lens_config(params.lens),
    params.n_prompts,
)
save_figure(fig, snakemake.output.png, title, caption, data=[snakemake.input.means])
