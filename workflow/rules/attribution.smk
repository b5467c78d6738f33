# F10: direct logit attribution (seed 002; Wang et al. 2022 fig 3c).
# Table: one row per (prompt, tracked token, component); components are the embeddings, each
# block's attention and MLP output, each head, and the bias terms.


rule dla:
    input:
        unpack(model_input),
    output:
        table=res("attribution/{model}/{prompts}.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/dla.py"


rule figure_F10:
    input:
        table=rules.dla.output.table,
    output:
        png=figure_report("F10", res("figures/F10_{model}_{prompts}.png")),
        svg=res("figures/F10_{model}_{prompts}.svg"),
        caption=res("figures/F10_{model}_{prompts}.json"),
    script:
        "../../scripts/figure_dla.py"


register_figure("F10", lambda m, p: figure_files("F10", m, p))
