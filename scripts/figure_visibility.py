"""Rule figure_F15: what one hidden state sees and reaches; the report's view shows every cell."""

from lenslab.figures.interactive import visibility_view
from lenslab.figures.save import save_figure, save_skipped_figure
from lenslab.figures.visibility import plot_visibility, query_cell
from lenslab.io import read_parquet
from lenslab.joblog import start_log
from lenslab.skipped import skipped

start_log(snakemake)  # everything this job prints goes to its rule's log

model = snakemake.wildcards.model
table = read_parquet(snakemake.input.table)
params = snakemake.params
if reason := skipped(table):  # the fidelity gate ruled the autograd path out for this model
    save_skipped_figure(snakemake.output.png, "visibility", reason)
else:
    fig, caption = plot_visibility(table, params.layer, params.position, model)
    query = query_cell(table, params.layer, params.position)
    view = visibility_view(table, query, "hover a cell: what it sees (below-left) and reaches")
    caption += (
        " The report's interactive view shows the map of every (layer, position) cell: hovering "
        "a cell makes it the query (click to freeze)."
    )
    save_figure(
        fig, snakemake.output.png, "visibility", caption, data=[snakemake.input.table],
        interactive={"views": [view]},
    )  # fmt: skip
