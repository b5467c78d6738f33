"""Rule report: gather every figure's caption sidecar into results/report.html."""

from lenslab.joblog import start_log
from lenslab.report import build_report

start_log(snakemake)  # everything this job prints goes to its rule's log

build_report(
    [f for f in snakemake.input.figures if f.endswith(".json")],
    snakemake.output.html,
    study=snakemake.params.study,
    extras=snakemake.params.extras,
)
