# The numbers behind the README's findings (lenslab.findings), one table per embedded model: each
# claim, its value on this run, the threshold it needs and whether it holds. The report shows it.


def findings_models():
    """Embedded models of a study that names its findings' prompt sets (study.findings)."""
    return [m for m in MODELS if is_embedded(m)] if CFG.study.findings else []


rule findings:
    input:
        unpack(model_input),  # the trained model directory: its metrics.json
        patching=lambda w: res(f"patching/{w.model}/{CFG.study.findings.patching}.parquet"),
        tracked=lambda w: res(f"lens/{w.model}/{CFG.study.findings.lens}/logit.targets.parquet"),
        tuned=f"{TUNED}/eval.parquet",
        # the J-lens rows when the study applies it (lens.lenses names jacobian)
        jlens=[f"{JLENS}/eval.parquet"] if "jacobian" in LENS.lenses else [],
        # F13c's measured error, where the study names the set (study.findings.atp).
        atp=lambda w: (
            [res(f"atp/{w.model}/{CFG.study.findings.atp}_summary.parquet")]
            if CFG.study.findings.get("atp")
            else []
        ),
    output:
        table=res("tables/findings_{model}.parquet"),
    params:
        model=lambda w: w.model,
    script:
        "../../scripts/findings.py"
