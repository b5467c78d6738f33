"""Rule report: gather every figure's caption sidecar into results/report.html."""

from lenslab.joblog import start_log
from lenslab.report import build_report, provenance

start_log(snakemake)  # everything this job prints goes to its rule's log
params = snakemake.params
build_report(
    [f for f in snakemake.input.figures if f.endswith(".json")],
    snakemake.output.html,
    study=params.study,
    extras=params.extras,
    tables=list(snakemake.input.get("tables", [])),
    prov=provenance(),
)
