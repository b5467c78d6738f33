# F11-F12: patchscopes (seed 002; Ghandeharioun et al. 2024). Settings are the figures'
# options (lenslab.options: IdentityOptions, EntityOptions).
# Tables: results/patchscopes/{model}/{prompts}/identity.parquet (one row per source cell,
# target layer and method) and entities.parquet (one row per source and layer).

PATCHSCOPES = res("patchscopes/{model}/{prompts}")


def identity_lenses():
    """The lenses F11 compares with: its `lenses` option, else the study's lens list."""
    return figure_options("F11").get("lenses") or list(LENS.lenses)


def identity_inputs(wildcards):
    inputs = model_input(wildcards)
    if "tuned" in identity_lenses():
        inputs["tuned"] = res(f"tuned_lens/{wildcards.model}/params.pt")
    if "jacobian" in identity_lenses():
        inputs["jacobian"] = res(f"jacobian_lens/{wildcards.model}/lens.pt")
    return inputs


rule patchscope_identity:
    input:
        unpack(identity_inputs),
        code=lib("patchscopes", "options", "lenses", "models", "prompts"),
    output:
        table=f"{PATCHSCOPES}/identity.parquet",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        options=lambda w: figure_options("F11"),
        lenses=identity_lenses(),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/patchscope_identity.py"


rule patchscope_entities:
    input:
        unpack(model_input),
        code=lib("patchscopes", "options", "models", "prompts"),
    output:
        table=f"{PATCHSCOPES}/entities.parquet",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        options=lambda w: figure_options("F12"),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/patchscope_entities.py"


rule figure_F11:
    input:
        table=rules.patchscope_identity.output.table,
        code=lib("figures/patchscopes", "figures/tables", "figures/save", "lenses/registry", "options", "stats/aggregate"),
    output:
        png=res("figures/F11_{model}_{prompts}.png"),
        svg=res("figures/F11_{model}_{prompts}.svg"),
        caption=res("figures/F11_{model}_{prompts}.json"),
    params:
        fid="F11",
        options=lambda w: figure_options("F11"),
    script:
        "../../scripts/figure_patchscopes.py"


rule figure_F12:
    input:
        table=rules.patchscope_entities.output.table,
        code=lib("figures/patchscopes", "figures/tables", "figures/save", "options", "stats/aggregate"),
    output:
        png=res("figures/F12_{model}_{prompts}.png"),
        svg=res("figures/F12_{model}_{prompts}.svg"),
        caption=res("figures/F12_{model}_{prompts}.json"),
    params:
        fid="F12",
        options=lambda w: figure_options("F12"),
    script:
        "../../scripts/figure_patchscopes.py"


register_figure("F11", lambda m, p: figure_files("F11", m, p))
register_figure("F12", lambda m, p: figure_files("F12", m, p))
