# Stage 7: one HTML page with every figure the study lists, its caption, its data and the run's
# provenance, and the findings tables.

# `snakemake --report report.zip`: every figure rule declares its PNG as a report() output with a
# caption from workflow/report/, grouped by figure family; this page describes the whole.
report: "../report/workflow.rst"


rule report:
    input:
        figures=all_figures(),
        tables=lambda w: [res(f"tables/findings_{m}.parquet") for m in findings_models()],
    output:
        html=report(res("report.html"), caption="../report/report.rst", category="report"),
    params:
        study=to_plain(CFG.study),
        extras={"config (every stage)": to_plain(CFG)}
        | (
            {"prompt sets across tokenizers (words of several tokens)": TOKEN_NOTES}
            if TOKEN_NOTES
            else {}
        ),
    script:
        "../../scripts/report.py"
