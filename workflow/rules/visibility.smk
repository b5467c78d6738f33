# F15: visibility (seed 003): gradient-based influence between hidden states.
# Table: one row per (query layer, query position, layer, position) for one prompt.


rule visibility:
    input:
        unpack(model_input),
    output:
        table=res("visibility/{model}/{prompts}.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        prompt=lambda w: figure_options("F15")["prompt"],
        normalise=lambda w: figure_options("F15")["normalise"],
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/visibility.py"


rule figure_F15:
    input:
        table=rules.visibility.output.table,
    output:
        png=figure_report("F15", res("figures/F15_{model}_{prompts}.png")),
        svg=res("figures/F15_{model}_{prompts}.svg"),
        caption=res("figures/F15_{model}_{prompts}.json"),
    params:
        layer=lambda w: figure_options("F15")["layer"],
        position=lambda w: figure_options("F15")["position"],
    script:
        "../../scripts/figure_visibility.py"


register_figure("F15", lambda m, p: figure_files("F15", m, p))
