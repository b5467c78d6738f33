# Lens stage: apply each lens of conf/lens (lens.lenses) to a prompt set's activations, reduce
# the logits to per-(layer, position) statistics, aggregate them, draw F2-F6 and F17.
from lenslab.stats.config import parse_lens_config

LENS = parse_lens_config(stage_cfg("lens"))  # a bad lens block fails here, before any job


def lens_inputs(wildcards):
    """Activations of the prompt set; the tuned lens and the J-lens also need their files."""
    base = res(f"activations/{wildcards.model}/{wildcards.prompts}")
    inputs = {"resid": f"{base}/resid.safetensors", "tokens": f"{base}/tokens.parquet"}
    if wildcards.lens == "tuned":
        inputs["tuned"] = res(f"tuned_lens/{wildcards.model}/params.pt")
    if wildcards.lens == "jacobian":
        inputs["jacobian"] = res(f"jacobian_lens/{wildcards.model}/lens.pt")
    return inputs


def lens_files(model, prompts, lenses=None, suffix="parquet"):
    return [res(f"lens/{model}/{prompts}/{lens}.{suffix}") for lens in lenses or LENS.lenses]


def figure_options(fid):
    figure = CFG.study.figures.get(fid)
    return to_plain(figure.options) if figure is not None else {}


def view_lens(fid):
    """The lens a logit-lens view draws: its `lens` option, else the first applied lens."""
    return figure_options(fid).get("lens") or LENS.lenses[0]


rule apply_lens:
    input:
        unpack(model_input),
        unpack(lens_inputs),
        code=lib("lenses", "stats", "models", "prompts", "extract"),
    output:
        table=res("lens/{model}/{prompts}/{lens}.parquet"),
        targets=res("lens/{model}/{prompts}/{lens}.targets.parquet"),
    wildcard_constraints:
        lens=r"[A-Za-z0-9_\-]+",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        lens=stage_cfg("lens"),
    threads: job_threads("lens", stage_cfg("lens"))
    resources:
        **job_resources("lens", stage_cfg("lens")),
    script:
        "../../scripts/apply_lens.py"


rule lens_tables:
    input:
        tables=lambda w: lens_files(w.model, w.prompts),
        targets=lambda w: lens_files(w.model, w.prompts, suffix="targets.parquet"),
        code=lib("stats"),
    output:
        means=res("lens/{model}/{prompts}/agg/layer_means.parquet"),
        compare=res("lens/{model}/{prompts}/agg/lens_compare.parquet"),
        targets=res("lens/{model}/{prompts}/agg/target_means.parquet"),
    params:
        lens=stage_cfg("lens"),
    threads: 1
    script:
        "../../scripts/lens_tables.py"


# F2 top-1 view, F3 rank of the final top-1, F4 KL(final || layer), F5 input view, F6 copying
# a rare token: one rule, the figure id is a wildcard.
rule figure_logit_lens:
    input:
        table=lambda w: lens_files(w.model, w.prompts, [view_lens(w.fid)])[0],
        targets=lambda w: lens_files(w.model, w.prompts, [view_lens(w.fid)], "targets.parquet")[0],
        means=rules.lens_tables.output.means,
        code=lib("figures/logit_lens", "figures/save", "figures/interactive", "lenses/registry", "stats/config"),
    output:
        png=report(res("figures/{fid}_{model}_{prompts}.png"), caption="../report/logit_lens.rst", category="logit lens", subcategory="{model}", labels={"figure": "{fid}", "model": "{model}", "prompts": "{prompts}"}),
        svg=res("figures/{fid}_{model}_{prompts}.svg"),
        json=res("figures/{fid}_{model}_{prompts}.json"),
    wildcard_constraints:
        fid="F[2-6]",
    params:
        fid=lambda w: w.fid,
        options=lambda w: figure_options(w.fid),
        lens=stage_cfg("lens"),
    threads: 1
    script:
        "../../scripts/figure_logit_lens.py"


# F17: KL, reverse KL, JS, MSE of logits, cosine of states, top-1 agreement per layer.
rule figure_F17:
    input:
        means=rules.lens_tables.output.means,
        code=lib("figures/distances", "figures/save", "lenses/registry", "stats/config"),
    output:
        png=report(res("figures/F17_{model}_{prompts}.png"), caption="../report/F17.rst", category="logit lens", subcategory="{model}", labels={"figure": "F17", "model": "{model}", "prompts": "{prompts}"}),
        svg=res("figures/F17_{model}_{prompts}.svg"),
        json=res("figures/F17_{model}_{prompts}.json"),
    params:
        options=lambda w: figure_options("F17"),
        lens=stage_cfg("lens"),
        n_prompts=lambda w: len(prompts_cfg(w.prompts)["prompts"]),
    threads: 1
    script:
        "../../scripts/figure_distances.py"


for _fid in ("F2", "F3", "F4", "F5", "F6", "F17"):
    register_figure(_fid, lambda m, p, fid=_fid: figure_files(fid, m, p))
