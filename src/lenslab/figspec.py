"""Every figure, declared once: its title, source document, report family, options schema and
caption. The rule files take each figure's report entry from here, the study's validation its
options schema, the report its family, and the README's figure table its row
(``python -m lenslab.figspec`` prints the table; a test checks the README has it).

Core layer, torch-free.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from lenslab import options as o
from lenslab.errors import LensLabError


@dataclass(frozen=True)
class FigureSpec:
    fid: str
    title: str  # what the figure shows (README row, report)
    seeds: str  # source document(s) in ../shared/seeds/ or methods.md
    family: str  # report group (lenslab's report.html and `snakemake --report`)
    options: type = o.NoOptions  # study.figures.<fid>.options schema, with every default
    caption: str = ""  # workflow/report/<caption>.rst (default: <fid>.rst)
    extra: str = ""  # further outputs, for the README row

    @property
    def caption_file(self) -> str:
        return f"{self.caption or self.fid}.rst"


LOGIT, TUNED = "logit lens", "tuned lens"
FIGURES: dict[str, FigureSpec] = {
    s.fid: s
    for s in (
        FigureSpec("F1", "hidden-state difference of two near-identical prompts", "seed 000",
                   "hidden-state differences", o.DifferenceOptions),
        FigureSpec("F2", "logit lens, top-1 token per (layer, position), colour = logit",
                   "seed 001, seed 002", LOGIT, o.ViewOptions, "logit_lens"),
        FigureSpec("F3", "rank of the final top-1 token under each layer's lens", "seed 001",
                   LOGIT, o.ViewOptions, "logit_lens"),
        FigureSpec("F4", "KL(final ‖ layer) heatmap and per-layer mean", "seed 001", LOGIT,
                   o.ViewOptions, "logit_lens"),
        FigureSpec("F5", "KL(input ‖ layer) and input-token rank", "seed 001", LOGIT,
                   o.ViewOptions, "logit_lens"),
        FigureSpec("F6", "copying a rare token (plasma prompt)", "seed 001", LOGIT,
                   o.ViewOptions, "logit_lens"),
        FigureSpec("F7", "tuned lens vs logit lens: trajectories, per-layer KL and CE",
                   "seed 002", TUNED, o.F7Options),
        FigureSpec("F8", "representational drift: layer similarity and layer transfer",
                   "seed 002", TUNED),
        FigureSpec("F9", "attribute lens: LRE faithfulness per relation and layer (95% Wilson "
                   "CI), and the LRE applied at every (layer, position) of a text", "seed 002",
                   "attribute lens", o.AttributeOptions),
        FigureSpec("F10", "direct logit attribution per block component and per head",
                   "seed 002", "direct logit attribution"),
        FigureSpec("F11", "token-identity patchscope vs logit and tuned lens per layer "
                   "(precision@1, surprisal), and across layers (l != l*)", "seed 002",
                   "patchscopes", o.IdentityOptions),
        FigureSpec("F12", "entity resolution by patchscope: greedy generation per layer, as a "
                   "table", "seed 002", "patchscopes", o.EntityOptions),
        FigureSpec("F13", "activation patching / causal tracing (resid, attn, MLP)", "seed 000",
                   "causal tracing", o.PatchingViewOptions, extra="F13b"),
        FigureSpec("F13b", "causal tracing by token category (ROME's curves)", "seed 000",
                   "causal tracing", o.PatchingViewOptions),
        FigureSpec("F13c", "attribution patching (AtP, AtP*) vs exact patching: estimate vs exact "
                   "per node kind (heads, MLP, residual), head x position maps; the measured "
                   "error in the caption", "methods.md (Nanda 2023; Kramar et al. 2024)",
                   "attribution patching", o.AtpFigureOptions),
        FigureSpec("F14", "residual updates vs gradients (iterative inference)", "seed 002",
                   "iterative inference"),
        FigureSpec("F15", "visibility: what one hidden state sees and reaches (gradient "
                   "influence)", "seed 003", "visibility", o.VisibilityOptions),
        FigureSpec("F16", "look-ahead: tokens t+1, t+2, t+3 in the logit lens's top 5 at t",
                   "seed 004", "look-ahead", o.LookaheadOptions),
        FigureSpec("F16b", "detour: answer vs the same concept's other word, per layer "
                   "(translation prompts; prefix-summed word probabilities)", "seed 004",
                   "look-ahead"),
        FigureSpec("F16c", "beam over the logit lens: multi-token continuations read from each "
                   "layer", "seed 004", "look-ahead", o.BeamOptions),
        FigureSpec("F18", "Jacobian lens (J-lens) vs logit and tuned lens: readout top-1 "
                   "trajectory, held-out KL to the output and top-1 agreement per layer",
                   "methods.md (Gurnee et al. 2026)", "Jacobian lens", o.JacobianOptions),
        FigureSpec("F17", "distance choice: KL, reverse KL, JS, MSE, cosine, top-1 agreement",
                   "seed 002", LOGIT, o.DistanceOptions),
    )
}  # fmt: skip
FAMILY_ORDER = tuple(dict.fromkeys(s.family for s in FIGURES.values()))


def figure_spec(fid: str) -> FigureSpec:
    """The declaration of figure ``fid``; an unknown id lists the known ones."""
    if fid not in FIGURES:
        raise LensLabError(f"unknown figure id {fid!r}", fix=f"use one of {list(FIGURES)}")
    return FIGURES[fid]


def figure_family(fid: str) -> str:
    """The group a figure is listed under (the report, `snakemake --report`)."""
    return FIGURES[fid].family if fid in FIGURES else "other"


def parse_figure_options(fid: str, options: object) -> object:
    """The figure's options with their defaults; bad keys or values name the figure."""
    spec = figure_spec(fid)
    try:
        return o.parse_options(spec.options, options)
    except LensLabError as err:
        raise LensLabError(f"study figure {fid}: {err.problem}", fix=err.fix) from err


def readme_rows(study: str = "default", model: str = "embedded", prompts: dict | None = None):
    """The README's figure table: one row per figure with its command in ``study``."""
    rows = []
    for spec in FIGURES.values():
        if spec.fid == "F13b":
            continue  # drawn with F13 (its row names it)
        p = (prompts or {}).get(spec.fid, "<prompts>")
        target = f"results/{study}/figures/{spec.fid}_{model}_{p}.png"
        out = f"`results/<study>/figures/{spec.fid}_<model>_<prompts>.{{png,svg}}`"
        if spec.extra:
            out += f" (+ `{spec.extra}_...`)"
        rows.append(
            f"| {spec.fid} {spec.title} | {spec.seeds} | `snakemake --cores all {target}` | {out} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the README's figure table for the default study."""
    argparse.ArgumentParser(description=main.__doc__).parse_args(argv)
    from lenslab.config import load_config  # pipeline use only

    cfg = load_config("default", [])
    prompts = {fid: fig.prompts[0] for fid, fig in cfg.study.figures.items()}
    prompts.setdefault("F13b", prompts.get("F13"))
    print("| figure id | source document | command (default study, embedded model) | output |")
    print("|---|---|---|---|")
    print("\n".join(readme_rows("default", next(iter(cfg.models)), prompts)))


if __name__ == "__main__":
    main()
