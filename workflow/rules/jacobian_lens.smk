# Jacobian lens (F18; Gurnee et al. 2026): fit per model on held-out text (no training), compare
# with the logit and tuned lenses on the evaluation text, draw. Settings: the `jacobian_lens:`
# block (conf/jacobian_lens/default.yaml). Outputs in results/jacobian_lens/{model}/: lens.pt
# (the reference artifact format, read by lenslab.lenses.registry for lens "jacobian" and by
# TransformerLens's JacobianLens.load) and eval.parquet.
from lenslab.lenses.jacobian_config import parse_jacobian_settings

JLENS_SETTINGS = parse_jacobian_settings(stage_cfg("jacobian_lens"))  # a bad block fails here
JLENS = res("jacobian_lens/{model}")


rule fit_jacobian_lens:
    input:
        unpack(model_input),
    output:
        lens=f"{JLENS}/lens.pt",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        jacobian=stage_cfg("jacobian_lens"),
    threads: JLENS_SETTINGS.fit.threads
    resources:
        **job_resources("train_tuned", stage_cfg("jacobian_lens").get("fit")),
    log:
        res("logs/fit_jacobian_lens/{model}.log"),
    script:
        "../../scripts/fit_jacobian_lens.py"


rule eval_jacobian_lens:
    input:
        unpack(model_input),
        lens=rules.fit_jacobian_lens.output.lens,
        tuned=res("tuned_lens/{model}/params.pt"),
        tuned_config=res("tuned_lens/{model}/config.json"),
    output:
        eval=f"{JLENS}/eval.parquet",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        jacobian=stage_cfg("jacobian_lens"),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    log:
        res("logs/eval_jacobian_lens/{model}.log"),
    script:
        "../../scripts/eval_jacobian_lens.py"


rule figure_F18:
    input:
        unpack(model_input),
        lens=rules.fit_jacobian_lens.output.lens,
        tuned=res("tuned_lens/{model}/params.pt"),
        eval=rules.eval_jacobian_lens.output.eval,
        acts=res("activations/{model}/{prompts}/resid.safetensors"),
    output:
        png=figure_report("F18", res("figures/F18_{model}_{prompts}.png")),
        svg=res("figures/F18_{model}_{prompts}.svg"),
        caption=res("figures/F18_{model}_{prompts}.json"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        options=lambda w: figure_options("F18"),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/figure_jacobian_lens.py"


register_figure("F18", lambda m, p: figure_files("F18", m, p))
