# F16 look-ahead and F16b detours (seed 004), read from the logit lens's tables. The tuned lens
# is never used here: it is trained to map every layer onto the output and would hide both.


rule figure_F16:
    input:
        table=lambda w: lens_files(w.model, w.prompts, ["logit"])[0],
        code=lib("figures/lookahead", "figures/save", "stats/aggregate"),
    output:
        png=report(res("figures/F16_{model}_{prompts}.png"), caption="../report/F16.rst", category="look-ahead", subcategory="{model}", labels={"figure": "F16", "model": "{model}", "prompts": "{prompts}"}),
        svg=res("figures/F16_{model}_{prompts}.svg"),
        caption=res("figures/F16_{model}_{prompts}.json"),
    params:
        max_ahead=lambda w: figure_options("F16").get("max_ahead", 3),
    script:
        "../../scripts/figure_lookahead.py"


rule figure_F16b:
    input:
        targets=lambda w: lens_files(w.model, w.prompts, ["logit"], "targets.parquet")[0],
        code=lib("figures/lookahead", "figures/save", "stats/aggregate"),
    output:
        png=report(res("figures/F16b_{model}_{prompts}.png"), caption="../report/F16b.rst", category="look-ahead", subcategory="{model}", labels={"figure": "F16b", "model": "{model}", "prompts": "{prompts}"}),
        svg=res("figures/F16b_{model}_{prompts}.svg"),
        caption=res("figures/F16b_{model}_{prompts}.json"),
    script:
        "../../scripts/figure_detour.py"


register_figure("F16", lambda m, p: figure_files("F16", m, p))
register_figure("F16b", lambda m, p: figure_files("F16b", m, p))
