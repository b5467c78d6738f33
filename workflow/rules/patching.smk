# F13: activation patching / causal tracing (seed 000 inference; Meng et al. 2022).
# Table: one row per (prompt, state kind, layer, position, window, metric).
from dataclasses import asdict

from lenslab.patching.config import parse_config as parse_patching_config


def patching_settings(prompts):
    """The patching settings of one prompt set (its `prompt_sets` override applied), so that
    editing another set's override does not rerun this one."""
    settings = asdict(parse_patching_config(stage_cfg("patching"), prompts))
    settings.pop("prompt_sets")
    settings["kinds"] = list(settings["kinds"])
    return settings



rule patching:
    input:
        unpack(model_input),
    output:
        table=res("patching/{model}/{prompts}.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        patching=lambda w: patching_settings(w.prompts),
    threads: job_threads("patching", stage_cfg("patching"))
    resources:
        **job_resources("patching", stage_cfg("patching")),
    script:
        "../../scripts/patching.py"


# F13: heatmaps (layer x position) for the three state kinds; F13b: token-category curves.
rule figure_F13:
    input:
        table=rules.patching.output.table,
    output:
        heatmap=figure_report("F13", res("figures/F13_{model}_{prompts}.png")),
        heatmap_svg=res("figures/F13_{model}_{prompts}.svg"),
        heatmap_caption=res("figures/F13_{model}_{prompts}.json"),
        categories=figure_report("F13b", res("figures/F13b_{model}_{prompts}.png")),
        categories_svg=res("figures/F13b_{model}_{prompts}.svg"),
        categories_caption=res("figures/F13b_{model}_{prompts}.json"),
    params:
        options=lambda w: figure_options("F13"),
    script:
        "../../scripts/figure_patching.py"


# Listing F13 in a study builds both figures; F13b alone builds the same rule.
register_figure("F13", lambda m, p: figure_files("F13", m, p) + figure_files("F13b", m, p))
register_figure("F13b", lambda m, p: figure_files("F13b", m, p))
