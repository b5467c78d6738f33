# Per-job resources (mem_mb, runtime in minutes, gpu count) estimated from the model config,
# the prompt set and the stage settings by lenslab.resources; a cluster profile
# (workflow/profiles/slurm) turns them into the scheduler's requests. Rules that load no model
# (tables, figures, the report) keep the profile's small default-resources.
from lenslab.resources import rule_resources, rule_threads


def _job(settings):
    def job(wildcards):
        prompts = wildcards.get("prompts")
        return {
            "model_cfg": model_cfg(wildcards.model),
            "prompts_cfg": prompts_cfg(prompts) if prompts else None,
            "settings": settings,
        }

    return job


def job_resources(kind, settings=None):
    """`resources:` of a rule whose jobs load {model} and, if the rule has it, run {prompts}."""
    return rule_resources(kind, _job(settings))


def job_threads(kind, settings=None):
    """`threads:` of such a rule: 1 for a start-up-bound job (the embedded model's), else the
    torch threads. Two one-thread jobs run side by side under --cores 2."""
    return rule_threads(kind, _job(settings))
