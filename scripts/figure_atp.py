"""Rule figure_F13c: attribution patching against exact patching (scatter, head maps)."""

from lenslab.figures.atp import plot_atp
from lenslab.figures.save import save_figure, save_skipped_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.options import AtpFigureOptions, parse_options
from lenslab.skipped import skipped

start_log(snakemake)  # everything this job prints goes to its rule's log

inp, out = snakemake.input, snakemake.output
nodes = read_parquet(inp.nodes)
what = "attribution patching vs exact patching"
if reason := skipped(nodes):  # the fidelity gate ruled AtP out for this model
    save_skipped_figure(out.figure, what, reason)
else:
    options = parse_options(AtpFigureOptions, snakemake.params.options)
    fig, caption = plot_atp(nodes, read_parquet(inp.summary), read_parquet(inp.misses), options)
    save_figure(fig, out.figure, what, caption, data=[inp.nodes, inp.summary, inp.misses])
