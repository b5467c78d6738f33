# Stage 2: tokens and the residual stream of every prompt of a prompt set.


rule extract:
    input:
        unpack(model_input),
    output:
        resid=res("activations/{model}/{prompts}/resid.safetensors"),
        tokens=res("activations/{model}/{prompts}/tokens.parquet"),
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        extract=stage_cfg("extract"),
    threads: job_threads("extract")
    resources:
        **job_resources("extract"),
    script:
        "../../scripts/extract.py"
