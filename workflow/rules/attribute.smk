# F9: attribute lens / linear relational embeddings (seed 002; Hernandez et al. 2024).
# Settings are the figure's options (lenslab.options.AttributeOptions). Outputs in
# results/attribute/{model}/{prompts}/: lre.safetensors (one LRE per relation and layer),
# faithfulness.parquet (per prompt and layer), summary.parquet (per relation and layer, with
# Wilson intervals), view.parquet (the lens over one text).

ATTRIBUTE = res("attribute/{model}/{prompts}")


rule attribute_lens:
    input:
        unpack(model_input),
    output:
        lenses=f"{ATTRIBUTE}/lre.safetensors",
        table=f"{ATTRIBUTE}/faithfulness.parquet",
        summary=f"{ATTRIBUTE}/summary.parquet",
        view=f"{ATTRIBUTE}/view.parquet",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        options=lambda w: figure_options("F9"),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/attribute_lens.py"


rule figure_F9:
    input:
        summary=rules.attribute_lens.output.summary,
        view=rules.attribute_lens.output.view,
    output:
        png=figure_report("F9", res("figures/F9_{model}_{prompts}.png")),
        svg=res("figures/F9_{model}_{prompts}.svg"),
        caption=res("figures/F9_{model}_{prompts}.json"),
    params:
        options=lambda w: figure_options("F9"),
    script:
        "../../scripts/figure_attribute.py"


register_figure("F9", lambda m, p: figure_files("F9", m, p))
