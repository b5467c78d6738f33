# Stage 1: the embedded model is trained by the pipeline; hub models need no rule (loaded by id).


rule train_embedded:
    output:
        model_dir=directory("results/models/{model}"),
    params:
        settings=lambda w: model_cfg(w.model)["embedded"],
    threads: 2
    resources:
        **job_resources("train_embedded"),
    log:
        "results/logs/train_embedded/{model}.log",
    script:
        "../../scripts/train_embedded.py"
