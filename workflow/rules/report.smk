# Stage 7: one HTML page with every figure the study lists and its caption.


rule report:
    input:
        figures=all_figures(),
        findings=[res(f"tables/findings_{m}.parquet") for m in findings_models()],
        code=lib("report"),
    output:
        html=res("report.html"),
    params:
        study=to_plain(CFG.study),
        extras={"models": {m: model_cfg(m) for m in MODELS}},
    script:
        "../../scripts/report.py"
