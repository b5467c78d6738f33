# Tuned lens (F7, F8): train per model, evaluate against the logit lens on held-out text, draw.
# Settings: the `tuned_lens:` block (conf/tuned_lens/default.yaml). Outputs in
# results/tuned_lens/{model}/: params.pt + config.json (the tuned-lens package's format, read by
# lenslab.lenses.registry for lens "tuned"), train_metrics.parquet, eval.parquet, drift.parquet.

TUNED = res("tuned_lens/{model}")



TUNED_THREADS = int(stage_cfg("tuned_lens").get("train", {}).get("threads", 2))


# The tuned lens's text when tuned_lens.text.source is built by the pipeline (wheel: files of a
# pinned PyPI wheel; sampled: the model's own samples; lenslab.corpus), once per model.
CORPUS = "results/corpus/{model}.jsonl"


def tuned_text_input(wildcards):
    text = stage_cfg("tuned_lens").get("text", {})
    return {"corpus": CORPUS.format(model=wildcards.model)} if text.get("source") in BUILT_TEXT else {}


def tuned_settings(model):
    """The tuned_lens block, with the built corpus's path filled in where it is used."""
    tuned = stage_cfg("tuned_lens")
    if tuned.get("text", {}).get("source") in BUILT_TEXT:
        tuned = {**tuned, "text": {**tuned["text"], "path": CORPUS.format(model=model)}}
    return tuned


rule corpus:
    input:
        unpack(model_input),
    output:
        corpus=CORPUS,
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        text=lambda w: stage_cfg("tuned_lens").get("text", {}),
        cache_dir="results/cache",
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    log:
        "results/logs/corpus/{model}.log",
    script:
        "../../scripts/build_corpus.py"


rule train_tuned_lens:
    input:
        unpack(model_input),
        unpack(tuned_text_input),
    output:
        params=f"{TUNED}/params.pt",
        config=f"{TUNED}/config.json",
        metrics=f"{TUNED}/train_metrics.parquet",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        tuned=lambda w: tuned_settings(w.model),
    threads: TUNED_THREADS
    resources:
        **job_resources("train_tuned", stage_cfg("tuned_lens").get("train")),
    log:
        res("logs/train_tuned_lens/{model}.log"),
    script:
        "../../scripts/train_tuned_lens.py"


rule eval_tuned_lens:
    input:
        unpack(model_input),
        unpack(tuned_text_input),
        params=rules.train_tuned_lens.output.params,
        config=rules.train_tuned_lens.output.config,
    output:
        eval=f"{TUNED}/eval.parquet",
        drift=f"{TUNED}/drift.parquet",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        tuned=lambda w: tuned_settings(w.model),
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    log:
        res("logs/eval_tuned_lens/{model}.log"),
    script:
        "../../scripts/eval_tuned_lens.py"


rule figure_F7:
    input:
        unpack(model_input),
        params=rules.train_tuned_lens.output.params,
        config=rules.train_tuned_lens.output.config,
        eval=rules.eval_tuned_lens.output.eval,
        acts=res("activations/{model}/{prompts}/resid.safetensors"),
    output:
        png=figure_report("F7", res("figures/F7_{model}_{prompts}.png")),
        svg=res("figures/F7_{model}_{prompts}.svg"),
        caption=res("figures/F7_{model}_{prompts}.json"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        options=lambda w: figure_options("F7"),
    # F7 decodes the prompt's states through both lenses (its hover shows top-k tokens), so it
    # loads the model: the scale study measured 6.8 GiB at GPT-2-XL shape.
    threads: job_threads("forward")
    resources:
        **job_resources("forward"),
    script:
        "../../scripts/figure_tuned_lens.py"


rule figure_F8:
    input:
        drift=rules.eval_tuned_lens.output.drift,
    output:
        png=figure_report("F8", res("figures/F8_{model}_{prompts}.png")),
        svg=res("figures/F8_{model}_{prompts}.svg"),
        caption=res("figures/F8_{model}_{prompts}.json"),
    params:
        options=lambda w: figure_options("F8"),
    script:
        "../../scripts/figure_tuned_lens.py"


register_figure("F7", lambda m, p: figure_files("F7", m, p))
register_figure("F8", lambda m, p: figure_files("F8", m, p))
