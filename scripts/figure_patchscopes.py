"""Rules figure_F11 / figure_F12: token identity vs lenses; entity resolution table."""

from lenslab.figures.patchscopes import plot_entities, plot_token_identity
from lenslab.figures.save import save_figure
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.options import EntityOptions, IdentityOptions, parse_options

start_log(snakemake)  # everything this job prints goes to its rule's log

model, prompts = snakemake.wildcards.model, snakemake.wildcards.prompts
fid = snakemake.params.fid
table = read_parquet(snakemake.input.table)
if fid == "F11":
    opts = parse_options(IdentityOptions, snakemake.params.options)
    fig, caption = plot_token_identity(table, model, opts.target)
    title = "token-identity patchscope vs lenses"
else:
    opts = parse_options(EntityOptions, snakemake.params.options)
    fig, caption = plot_entities(table, model, opts.target)
    title = "entity resolution by patchscope"
save_figure(fig, snakemake.output.png, title, caption, data=[snakemake.input.table])
