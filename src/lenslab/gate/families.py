"""Which methods work on which architecture family, measured on tiny random models.

Each family of :mod:`lenslab.models.tiny` is built from a config in code, and every method runs
on a short prompt and is compared with an independent computation:

- ``lens``: the logit lens at layer L against the model's logits;
- ``dla``: direct logit attribution's components (and heads) against the logit they split;
- ``patch_resid`` / ``patch_attn`` / ``patch_mlp``: the batched runner (suffix or full, as
  ``auto`` picks) against the naive one-forward-per-patch loop;
- ``visibility`` / ``iterative``: the autograd path's logits and states against the forward
  (then the method itself runs, with its causality check);
- ``tuned_lens``: an identity-initialised tuned lens against the logit lens at every layer.

A cell is ``ok`` (within fp32 tolerance) or a refusal by the fidelity gate (a LensLabError that
names the identity); anything else (a wrong value, a crash) is a defect, and the tests fail on
it. ``python -m lenslab.gate.families --markdown docs/families.md`` writes the table.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.models.tiny import FAMILY_CONFIGS, TINY_CONFIGS, build_tiny

TABLE_METHODS = (
    "lens",
    "dla",
    "patch_resid",
    "patch_attn",
    "patch_mlp",
    "visibility",
    "iterative",
    "tuned_lens",
)
FAMILIES = tuple(sorted(TINY_CONFIGS)) + tuple(FAMILY_CONFIGS)
TOL = 1e-4  # relative to the values' scale (at least 1)
PROMPT = [5, 17, 9, 40, 23]
CORRUPT = [5, 30, 9, 41, 23]


@dataclass(frozen=True)
class Cell:
    """One (family, method) outcome: ``ok`` with its error, ``refused`` with the reason, or
    ``wrong`` / ``crash`` (defects)."""

    status: str
    error: float = 0.0
    detail: str = ""

    def markdown(self) -> str:
        if self.status == "info":
            return self.detail
        if self.status == "ok":
            return "yes"
        if self.status == "refused":
            return f"refused ({self.detail})"
        return f"**{self.status.upper()}**"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def _cell(fn, adapter: ModelAdapter) -> Cell:
    try:
        err = fn(adapter)
    except LensLabError as e:
        ruling = e.problem.split("fidelity identity ")
        if len(ruling) == 2:  # the gate's refusal: name the identity
            return Cell("refused", float("nan"), ruling[1].split(" ")[0].strip("'"))
        return Cell("refused", float("nan"), e.problem[:60])
    except Exception as e:  # noqa: BLE001 - reported as a defect, never hidden
        return Cell("crash", float("nan"), f"{type(e).__name__}: {e}"[:200])
    return Cell("ok" if err <= TOL else "wrong", err)


def _lens(ad: ModelAdapter) -> float:
    ad.require("lens")
    logits, resid = ad.run_with_resid(torch.tensor([PROMPT]))
    with torch.no_grad():
        return _rel(ad.decode(resid[-1]), logits)


def _dla(ad: ModelAdapter) -> float:
    from lenslab.attribution.dla import direct_logit_attribution

    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = ad.forward(ids)[0, -1]
    tokens = {"a": 7, "b": 11}
    table = direct_logit_attribution(ad, PROMPT, tokens, heads=True, atol=1.0)
    whole = table[table["kind"].isin(["embed", "attn", "mlp", "bias"])]
    sums = whole.groupby("token")["value"].sum()
    got = torch.tensor([sums["a"], sums["b"]])
    err = _rel(got, logits[[7, 11]])
    heads = table[table["kind"].isin(["head", "attn_bias"])]
    if len(heads):
        split = heads.groupby(["layer", "token"])["value"].sum()
        attn = table[table["kind"] == "attn"].set_index(["layer", "token"])["value"]
        err = max(err, _rel(torch.tensor(split.values), torch.tensor(attn[split.index].values)))
    return err


def _patch(kind: str):
    def run(ad: ModelAdapter) -> float:
        from lenslab.patching.reference import clean_states, naive_patch
        from lenslab.patching.run import Patch, Patcher

        L, T = ad.n_layers, len(PROMPT)
        patches = [Patch(kind, (layer,), (t,)) for layer in range(L) for t in (1, T - 1)]
        patches.append(Patch(kind, tuple(range(L)), tuple(range(T))))
        patcher = Patcher(ad, PROMPT, CORRUPT, runner="auto")
        fast = patcher.run(patches, [0] * len(patches))
        clean = clean_states(ad, torch.tensor(PROMPT))
        slow = torch.stack([naive_patch(ad, clean, torch.tensor(CORRUPT), p) for p in patches])
        return _rel(fast, slow)

    return run


def _graph_error(ad: ModelAdapter) -> float:
    logits, resid = ad.run_with_resid(torch.tensor([PROMPT]))
    g_logits, states = ad.run_with_resid_graph(PROMPT)
    return max(_rel(g_logits, logits), *(_rel(s, r) for s, r in zip(states, resid, strict=True)))


def _visibility(ad: ModelAdapter) -> float:
    from lenslab.visibility import influence

    influence(ad, PROMPT[:3])  # raises if influence flows backwards
    return _graph_error(ad)


def _iterative(ad: ModelAdapter) -> float:
    from lenslab.iterative import update_gradient_cosines

    cos = update_gradient_cosines(ad, PROMPT)
    if not bool(torch.isfinite(cos).all()):
        return float("inf")
    return _graph_error(ad)


def _tuned(ad: ModelAdapter) -> float:
    from lenslab.lenses.tuned import TunedLens

    ad.require("tuned_lens")
    lens = TunedLens(ad)  # identity translators: must equal the logit lens everywhere
    logits, resid = ad.run_with_resid(torch.tensor([PROMPT]))
    with torch.no_grad():
        err = _rel(lens.logits(resid[-1], ad.n_layers), logits)
        for layer in range(ad.n_layers):
            err = max(err, _rel(lens.logits(resid[layer], layer), ad.decode(resid[layer])))
    return err


CHECKS = {
    "lens": _lens,
    "dla": _dla,
    "patch_resid": _patch("resid"),
    "patch_attn": _patch("attn"),
    "patch_mlp": _patch("mlp"),
    "visibility": _visibility,
    "iterative": _iterative,
    "tuned_lens": _tuned,
}


def measure_family(name: str) -> dict[str, Cell]:
    """Every method of ``TABLE_METHODS`` on the tiny model of family ``name``, plus the
    patching runner the gate allows (``runner``: suffix, or full when replay is unsafe)."""
    torch.manual_seed(0)
    try:
        adapter = ModelAdapter(build_tiny(name), name=name)
        fast = adapter.fidelity.available("patch_suffix")
    except LensLabError as e:  # a map or model the adapter rejects refuses every method
        short = e.problem.split(" (")[0].split(":")[0][:60]
        cells = {m: Cell("refused", float("nan"), short) for m in TABLE_METHODS}
        return {**cells, "runner": Cell("refused", float("nan"), "at load")}
    cells = {m: _cell(CHECKS[m], adapter) for m in TABLE_METHODS}
    return {**cells, "runner": Cell("info", detail="suffix" if fast else "full")}


def measure_all(families=FAMILIES) -> dict[str, dict[str, Cell]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            return {f: measure_family(f) for f in families}
        finally:
            logging.disable(logging.NOTSET)


def model_type(name: str) -> str:
    return FAMILY_CONFIGS.get(name, (name, None))[0]


def markdown(table: dict[str, dict[str, Cell]], errors: bool = False) -> str:
    """The families x methods table as Markdown (``errors``: add the measured errors)."""
    lines = [
        "# Architecture families x methods",
        "",
        "Generated by `python -m lenslab.gate.families --markdown docs/families.md` from tiny",
        "random models of each family (3 or 4 blocks, perturbed norms, multipliers away from "
        "1); do not edit",
        "by hand (`tests/unit/test_families.py` checks it is current). *yes*: equal to an independent",
        f"computation within {TOL:g} (relative, fp32); *refused*: the fidelity gate refuses the "
        "method for",
        "this family with a LensLabError naming the identity that fails.",
        "",
        "| family | model_type | " + " | ".join(TABLE_METHODS) + " | patching runner |",
        "|---|---|" + "---|" * (len(TABLE_METHODS) + 1),
    ]
    for fam, cells in table.items():
        row = [
            c.markdown() + (f" {c.error:.1e}" if errors and c.status == "ok" else "")
            for c in (cells[m] for m in (*TABLE_METHODS, "runner"))
        ]
        lines.append(f"| {fam} | {model_type(fam)} | " + " | ".join(row) + " |")
    lines += ["", _IDENTITY_NOTES]
    return "\n".join(lines) + "\n"


_IDENTITY_NOTES = """Identities (see `lenslab.gate.fidelity`): `lens_final` (the lens at layer L is the
model's logits), `norm_form` (the final norm is gamma * normalise(x) + beta), `linear_head` (no
logit soft-capping), `sublayer_sum` (each block's update is the sum of its attention and MLP
terms), `sublayer_patch` (restoring every attention and MLP output gives the clean updates),
`graph_path` (the autograd path equals the forward). *patching runner*: `suffix` when
replaying the blocks from a cached state equals the full forward on patched runs (identity
`suffix_patched`), else `full` (Bloom: its ALiBi bias is captured for one batch size; Gemma 4:
its per-layer inputs and shared K/V come from the clean run). A post-LN block (OPT-350m)
renormalises the residual stream inside every block, so it has no additive decomposition.

Hybrids (qwen3_next, qwen3_5, lfm2, jamba) map each block's mixer (attention, linear attention,
mamba or short conv) as `attn` with alternatives (`self_attn|linear_attn`: the first that exists
in the block); only attention mixers split into heads in DLA. Falcon-H1 runs mamba beside
attention and scales both by multipliers, and Gemma 4 adds a per-layer-input term: their updates
are not attention + MLP, and MiniMax takes the residual after the input norm (post-LN), so the
gate refuses DLA and attn/mlp patching by name. Gemma 3n's AltUp gives the stream an extra axis;
the adapter refuses the model at load."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", metavar="PATH", help="write the table to PATH")
    parser.add_argument("--errors", action="store_true", help="print the measured errors")
    parser.add_argument("families", nargs="*", help="only these families")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = measure_all(tuple(args.families) or FAMILIES)
    text = markdown(table, errors=args.errors)
    if args.markdown:
        Path(args.markdown).write_text(markdown(table))
    print(text)


if __name__ == "__main__":
    main()
