# Shared helpers for every rule file: the composed config, result paths, model paths, computed
# library inputs and the figure registry. Included first by the Snakefile.
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # works without `pip install -e .` too

from lenslab.config import canonical_json, load_config, to_plain  # noqa: E402
from lenslab.corpus import BUILT_TEXT  # noqa: E402
from lenslab.validate import validate_study  # noqa: E402

from lenslab.pipeline import check_launch, is_dry_run, overrides_list  # noqa: E402

# A mistyped --config key, overrides given as one string, or a Snakefile run from another
# directory (which would plan every job under that directory) is an error here, before any job.
# A cluster job (not the main process) runs where the main process sent it.
chosen_dir = workflow.overwrite_workdir is not None or not workflow.is_main_process
check_launch(config, Path(workflow.basedir), Path.cwd(), chosen_dir)
STUDY = str(config.get("study", "default"))
OVERRIDES = overrides_list(config.get("overrides"))
CFG = load_config(STUDY, OVERRIDES)
MODELS = list(CFG.models)

# Where results go. Trained models are shared by every study (same settings, same weights);
# everything else, the report included, lives under the study's own directory, so studies
# coexist. Rule files name result paths through res("...") and never spell "results/".
MODELS_DIR = "results/models"
RESULTS = f"results/{STUDY}"


def res(path):
    """A result path of this study: res("lens/{model}/x.parquet") -> results/<study>/lens/..."""
    return f"{RESULTS}/{path}"


def _relative(path):
    """``path`` relative to the working directory: rule inputs stay the same strings when the
    project is copied or moved, so a copy does not rerun every job."""
    return os.path.relpath(path, Path.cwd())


SRC = Path(_relative(Path(workflow.basedir) / "src"))
SCRIPTS = Path(_relative(Path(workflow.basedir) / "scripts"))


def add_code_inputs():
    """Give every rule that runs a script the library files that script runs (its transitive
    lenslab imports, lenslab.codedeps) as the input ``code``, so editing a module reruns exactly
    the jobs that use it. Computed, never listed by hand: a new rule or import needs no edit.
    Called by the Snakefile after every rule file is included."""
    from lenslab.codedeps import library_inputs

    for rule_ in workflow.rules:
        if rule_.script:
            script = SCRIPTS / Path(rule_.script).name
            # What the `input:` directive does: paths go through the rule's path modifier.
            rule_.input_modifier = rule_.output_modifier
            rule_.set_input(code=library_inputs(script, SRC))


def model_cfg(model):
    """The resolved config slice of one model: the rule's params, so changing it reruns it."""
    return to_plain(CFG.models[model])


def is_embedded(model):
    return CFG.models[model].source == "embedded"


def is_gguf(model):
    return CFG.models[model].source == "gguf"


# Sources that a rule builds into results/models/<model>/ (train_embedded, convert_gguf); every
# later job loads that directory like any local model.
BUILT_SOURCES = ("embedded", "gguf")


def has_built_dir(model):
    return CFG.models[model].source in BUILT_SOURCES


def model_dir(model):
    """Where the model's weights come from: the built directory or the hub id/local path."""
    return f"{MODELS_DIR}/{model}" if has_built_dir(model) else CFG.models[model].source


def model_input(wildcards):
    """Rules that load a model depend on the rule that builds its directory, where one does."""
    return {"model_dir": model_dir(wildcards.model)} if has_built_dir(wildcards.model) else {}


def models_of(source):
    """A wildcard constraint matching exactly the model keys of one source ("(?!)": none)."""
    names = [m for m in MODELS if CFG.models[m].source == source]
    return "|".join(map(re.escape, names)) or "(?!)"


# Every prompt set against every model, and every figure's options, before any job runs: a
# prompt too long for the model, an unknown word or a bad option is one clear error here.
# Words of several tokens, per model and prompt set: tracked by their first token, or the prompt
# left out for that model (multi_token: drop); the report lists both (never silently).
TOKEN_NOTES = {}
validate_study(
    CFG,
    {m: None if is_embedded(m) else model_dir(m) for m in MODELS},
    # A GPU must be visible here only when jobs run here (not on cluster nodes).
    check_devices=workflow.local_exec,
    need_models=not (workflow.dryrun or is_dry_run(sys.argv)),
    notes=TOKEN_NOTES,
)


def prompts_cfg(prompts):
    return to_plain(CFG.prompts[prompts])


def fitted_inputs(model, lenses):
    """Each lens's fitted file (lenslab.lenses.catalog: the tuned lens's params.pt, ...) as a
    named input; the logit lens has none."""
    from lenslab.lenses.catalog import fitted_file, fitted_key

    return {fitted_key(n): res(f) for n in lenses if (f := fitted_file(n, model))}


def figure_options(fid):
    """A figure's options with every default (lenslab.options, through lenslab.figspec): the
    rule's params, so the defaults live only in the schema."""
    from dataclasses import asdict

    from lenslab.figspec import parse_figure_options

    figure = CFG.study.figures.get(fid)
    return asdict(parse_figure_options(fid, to_plain(figure.options) if figure else None))


def figure_report(fid, path):
    """A figure's PNG as a `snakemake --report` entry: caption and family from lenslab.figspec
    (``fid`` may be the wildcard "{fid}" of a rule drawing several figures of one family)."""
    from lenslab.figspec import FIGURES

    spec = FIGURES["F2" if fid == "{fid}" else fid]
    labels = {"figure": fid, "model": "{model}", "prompts": "{prompts}"}
    caption = f"../report/{spec.caption_file}"
    return report(path, caption=caption, category=spec.family, subcategory="{model}", labels=labels)


def stage_cfg(stage):
    return to_plain(CFG[stage])


# Figure registry: each stage's rule file registers the outputs of its figures, keyed by figure
# id, as a function (model, prompts) -> list of paths. `rule all` asks for every figure the study
# lists, for every model and each of the figure's prompt sets.
FIGURES = {}


def register_figure(fid, targets):
    FIGURES[fid] = targets


def figure_files(fid, model, prompts, exts=("png", "svg", "json")):
    """The standard outputs of one figure: results/<study>/figures/<FID>_<model>_<prompts>.<ext>."""
    return [res(f"figures/{fid}_{model}_{prompts}.{ext}") for ext in exts]


def all_figures():
    out = []
    for fid, fig in CFG.study.figures.items():
        if fid not in FIGURES:
            raise ValueError(
                f"study {STUDY!r} asks for figure {fid}, which no rule file registers. "
                f"Fix: use one of {sorted(FIGURES)}"
            )
        for model in MODELS:
            for prompts in fig.prompts:
                out += FIGURES[fid](model, prompts)
    return out


# -- every product of the study --------------------------------------------------------------
# Snakemake rebuilds a missing file only when a job that needs to run asks for it: once the
# report exists, a deleted table or a killed job's missing outputs would stay missing ("Nothing
# to be done"). `rule all` therefore asks for every file that any job of the study produces,
# found by walking the DAG from the figures through the rules' own inputs, so new rules are
# covered without registering anything.


def _producers(path):
    return [r for r in workflow.rules if r.name != "all" and r.output and r.is_producer(path)]


def study_products(targets):
    """Every file some rule produces on the way to ``targets`` (targets included), in a stable
    order. Source files and hub model ids, which no rule produces, are left out."""
    seen, order, todo = set(), [], list(targets)
    while todo:
        path = str(todo.pop(0))
        if path in seen:
            continue
        seen.add(path)
        rules_ = _producers(path)
        if not rules_:
            continue
        order.append(path)
        rule_ = rules_[0]  # the rules' wildcard constraints make the producer unique
        wildcards = rule_.get_wildcards(path)
        outputs, _ = rule_.expand_output(wildcards)
        inputs = rule_.expand_input(wildcards)[0]
        todo += [str(f) for f in outputs] + [str(f) for f in inputs]
    return order


# -- a log file for every rule ----------------------------------------------------------------


def log_path(rule_):
    """results/<study>/logs/<rule>/<wildcard values>.log."""
    names = sorted(rule_.wildcard_names)
    stem = "_".join("{%s}" % n for n in names) or rule_.name
    return res(f"logs/{rule_.name}/{stem}.log")


def add_logs():
    """Give every rule without a `log:` directive one, so each job's output (stdout, stderr,
    progress bars, the traceback) is kept in a file that the failure summary names. Called by
    the Snakefile after every rule file is included."""
    for rule_ in workflow.rules:
        if rule_.name != "all" and not rule_.log:
            # What the `log:` directive does: the log path goes through the output's modifier.
            rule_.log_modifier = rule_.output_modifier
            rule_.set_log(log_path(rule_))
