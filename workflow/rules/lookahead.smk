# F16 look-ahead and F16b detours (seed 004), read from the logit lens's tables. The tuned lens
# is never used here: it is trained to map every layer onto the output and would hide both.


rule figure_F16:
    input:
        table=lambda w: lens_files(w.model, w.prompts, ["logit"])[0],
    output:
        png=figure_report("F16", res("figures/F16_{model}_{prompts}.png")),
        svg=res("figures/F16_{model}_{prompts}.svg"),
        caption=res("figures/F16_{model}_{prompts}.json"),
    params:
        max_ahead=lambda w: figure_options("F16")["max_ahead"],
    script:
        "../../scripts/figure_lookahead.py"


# F16b table: the logit lens's probability of each tracked word at the last position, summed
# over the word's prefix tokens (Wendler et al. 2024), so words of several tokens count.
rule detour:
    input:
        unpack(model_input),
    output:
        table=res("lookahead/{model}/{prompts}.detour.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/detour.py"


rule figure_F16b:
    input:
        targets=rules.detour.output.table,
    output:
        png=figure_report("F16b", res("figures/F16b_{model}_{prompts}.png")),
        svg=res("figures/F16b_{model}_{prompts}.svg"),
        caption=res("figures/F16b_{model}_{prompts}.json"),
    script:
        "../../scripts/figure_detour.py"


register_figure("F16", lambda m, p: figure_files("F16", m, p))
register_figure("F16b", lambda m, p: figure_files("F16b", m, p))


# F16c: a beam over the logit lens from each layer reads multi-token continuations (seed 004).
rule lens_beam:
    input:
        unpack(model_input),
    output:
        table=res("lookahead/{model}/{prompts}.beam.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        options=lambda w: figure_options("F16c"),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/lens_beam.py"


rule figure_F16c:
    input:
        table=rules.lens_beam.output.table,
    output:
        png=figure_report("F16c", res("figures/F16c_{model}_{prompts}.png")),
        svg=res("figures/F16c_{model}_{prompts}.svg"),
        caption=res("figures/F16c_{model}_{prompts}.json"),
    params:
        options=lambda w: figure_options("F16c"),
    script:
        "../../scripts/figure_beam.py"


register_figure("F16c", lambda m, p: figure_files("F16c", m, p))
