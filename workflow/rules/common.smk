# Shared helpers for every rule file: the composed config, model paths, library dependencies and
# the figure registry. Included first by the Snakefile.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # works without `pip install -e .` too

from lenslab.config import canonical_json, load_config, to_plain  # noqa: E402

STUDY = str(config.get("study", "default"))
OVERRIDES = [str(o) for o in config.get("overrides", []) or []]
CFG = load_config(STUDY, OVERRIDES)
MODELS = list(CFG.models)
LIB = Path(workflow.basedir) / "src" / "lenslab"
SCRIPTS = Path(workflow.basedir) / "scripts"


def lib(*modules):
    """Library source files a rule depends on, so that editing them reruns the rule.

    Names are module paths below src/lenslab ("extract", "models/adapter"); a package name
    ("lenses") stands for every file in it.
    """
    files = []
    for name in ("errors", "io", "config", "runtime", *modules):
        path = LIB / name
        files += sorted(map(str, path.rglob("*.py"))) if path.is_dir() else [f"{path}.py"]
    return files


def model_cfg(model):
    """The resolved config slice of one model: the rule's params, so changing it reruns it."""
    return to_plain(CFG.models[model])


def is_embedded(model):
    return CFG.models[model].source == "embedded"


def model_dir(model):
    """Where the model's weights come from: the trained directory or the hub id/local path."""
    return f"results/models/{model}" if is_embedded(model) else CFG.models[model].source


def model_input(wildcards):
    """Rules that load a model depend on its training only for the embedded model."""
    return {"model_dir": model_dir(wildcards.model)} if is_embedded(wildcards.model) else {}


def prompts_cfg(prompts):
    return to_plain(CFG.prompts[prompts])


def stage_cfg(stage):
    return to_plain(CFG[stage])


# Figure registry: each stage's rule file registers the outputs of its figures, keyed by figure
# id, as a function (model, prompts) -> list of paths. `rule all` asks for every figure the study
# lists, for every model and each of the figure's prompt sets.
FIGURES = {}


def register_figure(fid, targets):
    FIGURES[fid] = targets


def figure_files(fid, model, prompts, exts=("png", "svg", "json")):
    """The standard outputs of one figure: results/figures/<FID>_<model>_<prompts>.<ext>."""
    return [f"results/figures/{fid}_{model}_{prompts}.{ext}" for ext in exts]


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
