# F14: residual updates vs gradients (seed 002; Belrose et al. 2023 fig 19).
# Table: one row per (prompt, block, position) with cos(update, -grad of the final loss).


rule iterative:
    input:
        unpack(model_input),
    output:
        table=res("iterative/{model}/{prompts}.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/iterative.py"


rule figure_F14:
    input:
        table=rules.iterative.output.table,
    output:
        png=figure_report("F14", res("figures/F14_{model}_{prompts}.png")),
        svg=res("figures/F14_{model}_{prompts}.svg"),
        caption=res("figures/F14_{model}_{prompts}.json"),
    script:
        "../../scripts/figure_iterative.py"


register_figure("F14", lambda m, p: figure_files("F14", m, p))
