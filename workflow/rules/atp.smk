# F13c: attribution patching (AtP, Nanda 2023; AtP*, Kramar et al. 2024) over every head, MLP
# and residual node, with its error measured by exact patching in the same run.
# Tables: nodes (estimates and exact values), summary (correlations, recall), misses.
from lenslab.patching.config import parse_atp_config


def atp_settings():
    settings = asdict(parse_atp_config(stage_cfg("atp")))
    settings["kinds"] = list(settings["kinds"])
    return settings


rule atp:
    input:
        unpack(model_input),
    output:
        nodes=res("atp/{model}/{prompts}.parquet"),
        summary=res("atp/{model}/{prompts}_summary.parquet"),
        misses=res("atp/{model}/{prompts}_misses.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        patching=lambda w: patching_settings(w.prompts),
        atp=lambda w: atp_settings(),
    threads: job_threads("patching", stage_cfg("patching"))
    resources:
        **job_resources("patching", stage_cfg("patching")),
    script:
        "../../scripts/atp.py"


# F13c: estimate vs exact per node kind, and the head x position map of AtP*.
rule figure_F13c:
    input:
        nodes=rules.atp.output.nodes,
        summary=rules.atp.output.summary,
        misses=rules.atp.output.misses,
    output:
        figure=figure_report("F13c", res("figures/F13c_{model}_{prompts}.png")),
        svg=res("figures/F13c_{model}_{prompts}.svg"),
        caption=res("figures/F13c_{model}_{prompts}.json"),
    params:
        options=lambda w: figure_options("F13c"),
    script:
        "../../scripts/figure_atp.py"


register_figure("F13c", lambda m, p: figure_files("F13c", m, p))
