# Sharded prompt sets (`shards: n` in a prompt-set config; lenslab.shards): extraction, lens
# statistics and patching run per shard, then gather into the very paths the one-job rules
# write, so every later rule is unchanged. Sets with shards: 1 never use these rules.
import re

from lenslab.patching.config import resolve_mode
from lenslab.resources import rule_resources
from lenslab.shards import case_count, n_shards, prompt_slice, shard_bounds, shard_of

SHARDED = sorted(p for p in CFG.prompts if n_shards(CFG.prompts[p]) > 1)
# Only sharded sets match the shard rules; "(?!)" matches nothing when no set is sharded.
SHARDED_RE = "|".join(re.escape(p) for p in SHARDED) or "(?!)"


def prompt_bounds(prompts):
    """Prompt slices of a set, aligned to the extraction batch so batches are unchanged."""
    align = int(stage_cfg("extract").get("batch_size", 8))
    n = len(CFG.prompts[prompts].prompts)
    return shard_bounds(n, n_shards(CFG.prompts[prompts]), align)


def case_bounds(prompts):
    settings = patching_settings(prompts)
    mode = resolve_mode(settings["mode"], CFG.prompts[prompts])
    return shard_bounds(case_count(CFG.prompts[prompts], mode), n_shards(CFG.prompts[prompts]))


def shard_prompts(wildcards):
    lo, hi = shard_of(prompt_bounds(wildcards.prompts), wildcards.shard)
    return prompt_slice(prompts_cfg(wildcards.prompts), lo, hi)


def shard_job(wildcards):
    """Keyword arguments of lenslab.resources.resources for one shard's job."""
    lo, hi = shard_of(prompt_bounds(wildcards.prompts), wildcards.shard)
    return {"model_cfg": model_cfg(wildcards.model), "prompts_cfg": prompts_cfg(wildcards.prompts),
            "n_prompts": hi - lo}  # fmt: skip


def shard_dir(stage, model, prompts, shard):
    return res(f"{stage}/{model}/{prompts}/shards/{shard}")


rule extract_shard:
    input:
        unpack(model_input),
    output:
        resid=res("activations/{model}/{prompts}/shards/{shard}/resid.safetensors"),
        tokens=res("activations/{model}/{prompts}/shards/{shard}/tokens.parquet"),
    wildcard_constraints:
        prompts=SHARDED_RE,
        shard=r"\d+",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=shard_prompts,
        extract=stage_cfg("extract"),
    threads: 2
    resources:
        **rule_resources("extract", shard_job),
    script:
        "../../scripts/extract.py"


rule apply_lens_shard:
    input:
        unpack(model_input),
        unpack(lens_inputs),
    output:
        table=res("lens/{model}/{prompts}/shards/{shard}/{lens}.parquet"),
        targets=res("lens/{model}/{prompts}/shards/{shard}/{lens}.targets.parquet"),
    wildcard_constraints:
        prompts=SHARDED_RE,
        shard=r"\d+",
        lens=r"[A-Za-z0-9_\-]+",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=shard_prompts,
        lens=stage_cfg("lens"),
    threads: 2
    resources:
        **rule_resources("lens", lambda w: {**shard_job(w), "settings": stage_cfg("lens")}),
    script:
        "../../scripts/apply_lens.py"


def lens_shard_files(wildcards, suffix):
    n = len(prompt_bounds(wildcards.prompts))
    return [
        f"{shard_dir('lens', wildcards.model, wildcards.prompts, k)}/{wildcards.lens}.{suffix}"
        for k in range(n)
    ]


rule gather_lens:
    input:
        table=lambda w: lens_shard_files(w, "parquet"),
        targets=lambda w: lens_shard_files(w, "targets.parquet"),
    output:
        table=res("lens/{model}/{prompts}/{lens}.parquet"),
        targets=res("lens/{model}/{prompts}/{lens}.targets.parquet"),
    wildcard_constraints:
        prompts=SHARDED_RE,
        lens=r"[A-Za-z0-9_\-]+",
    params:
        offsets=lambda w: [lo for lo, _ in prompt_bounds(w.prompts)],
    threads: 1
    script:
        "../../scripts/gather_shards.py"


rule patching_shard:
    input:
        unpack(model_input),
    output:
        table=res("patching/{model}/{prompts}/shards/{shard}.parquet"),
    wildcard_constraints:
        prompts=SHARDED_RE,
        shard=r"\d+",
    params:
        model=lambda w: model_cfg(w.model),
        model_path=lambda w: model_dir(w.model),
        prompts=lambda w: prompts_cfg(w.prompts),
        patching=lambda w: patching_settings(w.prompts),
        bounds=lambda w: case_bounds(w.prompts),
        n_cases=lambda w: case_bounds(w.prompts)[-1][1],
    threads: 2
    resources:
        **rule_resources(
            "patching",
            lambda w: {
                "model_cfg": model_cfg(w.model),
                "prompts_cfg": prompts_cfg(w.prompts),
                "settings": patching_settings(w.prompts),
                "n_prompts": (lambda b: b[1] - b[0])(shard_of(case_bounds(w.prompts), w.shard)),
            },
        ),
    script:
        "../../scripts/patching.py"


rule gather_patching:
    input:
        table=lambda w: [
            res(f"patching/{w.model}/{w.prompts}/shards/{k}.parquet")
            for k in range(len(case_bounds(w.prompts)))
        ],
    output:
        table=res("patching/{model}/{prompts}.parquet"),
    wildcard_constraints:
        prompts=SHARDED_RE,
    params:
        offsets=None,
    threads: 1
    script:
        "../../scripts/gather_shards.py"


# A sharded set's tables come from the gather rules; the one-job rules serve every other set.
ruleorder: gather_lens > apply_lens
ruleorder: gather_patching > patching
