# lenslab: the whole study as one DAG.
#   snakemake --cores all                         # the default study (embedded model)
#   snakemake --cores all --config study=paper    # another study file in conf/study/
#   snakemake --cores all --config 'overrides=["+model@models.gpt2=gpt2"]'   # Hydra overrides
#   snakemake --cores all results/paper/report.html --config study=paper     # targets first
# Results: results/models/ (trained models, shared), results/<study>/ (everything else).
# Values come from Hydra (conf/); paths and the DAG live here and in workflow/rules/.

configfile: f"{workflow.basedir}/workflow/snakemake.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"


wildcard_constraints:
    model=r"[A-Za-z0-9.\-]+",  # no underscore: it separates model from prompt set in names
    prompts=r"[A-Za-z0-9_.\-]+",


include: "workflow/rules/model.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/difference.smk"
include: "workflow/rules/lens.smk"
include: "workflow/rules/lookahead.smk"
include: "workflow/rules/tuned_lens.smk"
include: "workflow/rules/jacobian_lens.smk"
include: "workflow/rules/patching.smk"
include: "workflow/rules/atp.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/iterative.smk"
include: "workflow/rules/visibility.smk"
include: "workflow/rules/attribute.smk"
include: "workflow/rules/patchscopes.smk"
include: "workflow/rules/findings.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/benchmarks.smk"


add_logs()
add_code_inputs()


# Every table and figure of the study, not only the report: whatever was deleted, killed or
# never finished is rebuilt by a plain `snakemake --cores all`.
rule all:
    input:
        study_products([rules.report.output.html]),
