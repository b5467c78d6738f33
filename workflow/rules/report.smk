# Stage 7: one HTML page with every figure the study lists, its caption, its data and the run's
# provenance. Extra Parquet tables (e.g. a findings table) join the page through REPORT_TABLES:
# a rule file appends its output path there, and the report shows it in its Tables section.
REPORT_TABLES = []

# `snakemake --report report.zip`: every figure rule declares its PNG as a report() output with a
# caption from workflow/report/, grouped by figure family; this page describes the whole.
report: "../report/workflow.rst"


rule report:
    input:
        figures=all_figures(),
        # The findings tables (lenslab.findings) first, then tables other rule files add.
        tables=lambda w: [res(f"tables/findings_{m}.parquet") for m in findings_models()]
        + REPORT_TABLES,
        code=lib("report", "report_js", "figures/save"),
    output:
        html=report(res("report.html"), caption="../report/report.rst", category="report"),
    params:
        study=to_plain(CFG.study),
        extras={"config (every stage)": to_plain(CFG)}
        | (
            {"words of several tokens, tracked by their first token": TOKEN_NOTES}
            if TOKEN_NOTES
            else {}
        ),
    script:
        "../../scripts/report.py"
