# `--config benchmarks=true`: every rule writes Snakemake's benchmark file (wall time, peak
# memory, CPU time) to results/<study>/benchmarks/<rule>/<wildcards>.tsv. Included after every rule file,
# so rules need no `benchmark:` line of their own; off by default (it adds files to results/).
if str(config.get("benchmarks", False)).lower() in ("true", "1", "yes"):
    for _rule in workflow.rules:
        if _rule.benchmark is None and _rule.output and _rule.name != "all":
            _names = sorted(_rule.wildcard_names)
            _tail = "/".join(f"{{{n}}}" for n in _names) if _names else "job"
            # the same path modifier the rule's own output got (module prefixes and the like)
            _rule.benchmark_modifier = _rule.input_modifier
            _rule.benchmark = res(f"benchmarks/{_rule.name}/{_tail}.tsv")
