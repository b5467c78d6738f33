# F1: hidden-state differences of clean/corrupt prompt pairs (seed 000).


rule difference:
    input:
        unpack(model_input),
        acts=res("activations/{model}/{prompts}/resid.safetensors"),
    output:
        table=res("tables/{model}/{prompts}/F1_difference.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/difference.py"


rule figure_F1:
    input:
        table=rules.difference.output.table,
    output:
        png=figure_report("F1", res("figures/F1_{model}_{prompts}.png")),
        svg=res("figures/F1_{model}_{prompts}.svg"),
        caption=res("figures/F1_{model}_{prompts}.json"),
    params:
        options=lambda w: figure_options("F1"),
    script:
        "../../scripts/figure_difference.py"


register_figure("F1", lambda m, p: figure_files("F1", m, p))
