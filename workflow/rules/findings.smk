# The numbers behind the README's findings (lenslab.findings), one table per model: each claim,
# its value on this run, the threshold it needs and whether it holds. The report shows it.
# Embedded models: rule findings (training metrics, ROME's block-0 contrast, emergence, tuned
# lens). Other models (the `real` study): rule findings_real, with bootstrap intervals over
# prompts; the study's `findings:` names the prompt sets (patching, lens, patchscope, lookahead).


def findings_models():
    """Models of a study that names its findings' prompt sets (study.findings)."""
    if not CFG.study.findings:
        return []
    real = "lens" in CFG.study.findings and "patching" in CFG.study.findings
    return [m for m in MODELS if is_embedded(m) or real]


def models_not_of(source):
    names = [m for m in MODELS if CFG.models[m].source != source]
    return "|".join(map(re.escape, names)) or "(?!)"


rule findings:
    wildcard_constraints:
        model=models_of("embedded"),
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


def real_findings_inputs(wildcards):
    f, m = CFG.study.findings, wildcards.model
    inputs = {
        "patching": res(f"patching/{m}/{f.patching}.parquet"),
        "lens": res(f"lens/{m}/{f.lens}/logit.parquet"),
    }
    # optional claims: measured where the study names their prompt sets
    if "patchscope" in f:
        inputs["identity"] = res(f"patchscopes/{m}/{f.patchscope}/identity.parquet")
    if "lookahead" in f:
        inputs["lookahead"] = res(f"lens/{m}/{f.lookahead}/logit.parquet")
    if "tuned" in LENS.lenses:
        inputs["tuned"] = res(f"tuned_lens/{m}/eval.parquet")
    return inputs


rule findings_real:
    wildcard_constraints:
        model=models_not_of("embedded"),
    input:
        unpack(real_findings_inputs),
    output:
        table=res("tables/findings_{model}.parquet"),
    params:
        model=lambda w: w.model,
        sets=lambda w: to_plain(CFG.study.findings),
    script:
        "../../scripts/findings_real.py"
