# Stage 7: one HTML page with every figure the study lists, its caption, its data and the run's
# provenance. Extra Parquet tables (e.g. a findings table) join the page through REPORT_TABLES:
# a rule file appends its output path there, and the report shows it in its Tables section.
REPORT_TABLES = []


rule report:
    input:
        figures=all_figures(),
        tables=lambda w: REPORT_TABLES,
        code=lib("report", "report_js", "figures/save"),
    output:
        html="results/report.html",
    params:
        study=to_plain(CFG.study),
        extras={"config (every stage)": to_plain(CFG)},
    script:
        "../../scripts/report.py"
