"""Relations for the attribute lens (F9): prompt sets, LRE estimation splits, faithfulness.

A relation prompt set is an ordinary prompt set whose ids are ``<relation>.<name>`` and whose
prompts give ``subject`` and ``answer`` (the object, scored by its first token). The first
``n_train`` prompts of each relation estimate the LRE; faithfulness is measured on the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from lenslab.config import cfg_get as _get
from lenslab.embedded import world
from lenslab.errors import LensLabError
from lenslab.lenses.attribute import AttributeLens, RelationPrompt, fit_attribute_lens
from lenslab.models.adapter import ModelAdapter
from lenslab.options import AttributeOptions
from lenslab.prompts import encode, subject_positions
from lenslab.stats.aggregate import wilson

FAITH_COLUMNS = [
    "relation", "prompt_id", "layer", "object", "object_id", "model_pred_id", "model_correct",
    "lre_pred_id", "lre_pred", "hit",
]  # fmt: skip
SUMMARY_COLUMNS = ["relation", "layer", "recall", "ci_low", "ci_high", "n_correct", "n_prompts"]


def first_token(tokenizer, word: str) -> int:
    """The first token of ``word`` after a space (how the object starts in a cloze prompt)."""
    ids = tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
    if not ids:
        raise LensLabError(f"object {word!r} encodes to no tokens", fix="check the answer")
    return ids[0]


def relation_prompts(
    tokenizer, prompt_set: Any, prepend_bos: bool | None = None
) -> dict[str, list[RelationPrompt]]:
    """Prompts grouped by relation (the id's part before the first '.'), in file order."""
    out: dict[str, list[RelationPrompt]] = {}
    for p in _get(prompt_set, "prompts"):
        pid, text, subject, answer = (_get(p, k) for k in ("id", "text", "subject", "answer"))
        if "." not in pid or not subject or not answer:
            raise LensLabError(
                f"prompt {pid!r} is not a relation prompt",
                fix="relation prompt ids are '<relation>.<name>' with a subject and an answer",
            )
        ids = encode(tokenizer, text, prepend_bos)
        pos = subject_positions(tokenizer, text, subject, ids)
        out.setdefault(pid.split(".", 1)[0], []).append(
            RelationPrompt(pid, ids, pos[-1], first_token(tokenizer, answer))
        )
    return out


def split(prompts: Sequence[RelationPrompt], n_train: int) -> tuple[list, list]:
    """(estimation prompts, evaluation prompts): the first ``n_train`` and the rest."""
    if not 1 <= n_train < len(prompts):
        raise LensLabError(
            f"n_train={n_train} leaves no prompts to evaluate ({len(prompts)} in the relation)",
            fix=f"use 1 <= n_train < {len(prompts)}, or add prompts to the relation",
        )
    return list(prompts[:n_train]), list(prompts[n_train:])


@torch.no_grad()
def faithfulness(
    adapter: ModelAdapter, lens: AttributeLens, prompts: Sequence[RelationPrompt]
) -> pd.DataFrame:
    """Per (prompt, layer): the model's own top-1 at the last position, the LRE's top-1 from
    ``resid[layer]`` at the last subject token, and whether the LRE's top-1 is the object."""
    tok = adapter.tokenizer
    rows = []
    for p in prompts:
        logits, resid = adapter.run_with_resid(torch.tensor([p.ids], device=adapter.device))
        model_pred = int(logits[0, -1].argmax())
        h = resid[:, 0, p.subject_pos]  # [L+1, D]
        preds = [int(lens.logits(h[k], k).argmax()) for k in range(h.shape[0])]
        for k, pred in enumerate(preds):
            rows.append((lens.relation, p.id, k, tok.decode([p.object_id]).strip(), p.object_id,
                         model_pred, model_pred == p.object_id, pred,
                         tok.decode([pred]).strip(), pred == p.object_id))  # fmt: skip
    return pd.DataFrame(rows, columns=FAITH_COLUMNS)


def faithfulness_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (relation, layer): recall@1 of the LRE against the object, counted only on prompts
    the model itself answers correctly, with a 95% Wilson interval."""
    rows = []
    for (rel, layer), g in table.groupby(["relation", "layer"], sort=True):
        ok = g[g["model_correct"]]
        k, n = int(ok["hit"].sum()), len(ok)
        lo, hi = wilson(k, n)
        rows.append((rel, layer, k / n if n else float("nan"), lo, hi, n, g["prompt_id"].nunique()))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


@torch.no_grad()
def attribute_view(adapter: ModelAdapter, lens: AttributeLens, ids: Sequence[int]) -> pd.DataFrame:
    """The attribute lens at every (layer, position) of one prompt: top-1 token and its prob."""
    _, resid = adapter.run_with_resid(torch.tensor([list(ids)], device=adapter.device))
    rows = []
    for k in range(resid.shape[0]):
        probs = torch.softmax(lens.logits(resid[k, 0], k).float(), -1)
        top = probs.max(-1)
        for t in range(len(ids)):
            pred = int(top.indices[t])
            rows.append((k, t, adapter.tokenizer.decode([int(ids[t])]),
                         pred, adapter.tokenizer.decode([pred]).strip(), float(top.values[t])))  # fmt: skip
    return pd.DataFrame(rows, columns=["layer", "position", "token", "top1_id", "top1", "prob"])


def world_relation_prompts(
    relations: Sequence[str] = ("capital", "language", "currency", "continent"),
    template: dict[str, str] | None = None,
    countries: Sequence[world.Country] | None = None,
    prefix: str = "",
) -> list[dict]:
    """Relation prompts over the world's countries (natural spelling), for prompt-set files:
    ``template[relation]`` is a world template (default ``world.FEWSHOT``), cut before its
    object. ``prefix`` (few-shot demonstrations) goes in front of every prompt."""
    template = template or world.FEWSHOT
    out = []
    for rel in relations:
        for c in countries or world.COUNTRIES:
            text, answer = world.cloze(template[rel], c)
            out.append({"id": f"{rel}.{c.name.lower()}", "text": world.natural(prefix + text),
                        "subject": c.name, "answer": answer})  # fmt: skip
    return out


def run_attribute(
    adapter: ModelAdapter, prompt_set: Any, opts: AttributeOptions, prepend_bos: bool | None = None,
    progress: bool = False,
) -> tuple[list[AttributeLens], pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Fit one attribute lens per relation; (lenses, per-prompt faithfulness, summary, view)."""
    groups = relation_prompts(adapter.tokenizer, prompt_set, prepend_bos)
    unknown = sorted(set(opts.beta) - set(groups))
    if unknown:
        raise LensLabError(
            f"beta given for relation(s) {unknown} that the prompt set does not have",
            fix=f"use relations among {sorted(groups)}",
        )
    lenses, tables = [], []
    for rel, prompts in groups.items():
        train, evaluate = split(prompts, opts.n_train)
        lens = fit_attribute_lens(adapter, train, opts.beta.get(rel, 1.0), rel, progress)
        lenses.append(lens)
        tables.append(faithfulness(adapter, lens, evaluate))
    table = pd.concat(tables, ignore_index=True)
    view_rel = opts.view_relation or next(iter(groups))
    if view_rel not in groups:
        raise LensLabError(f"view_relation {view_rel!r} is not in the prompt set",
                           fix=f"use one of {sorted(groups)}")  # fmt: skip
    lens = lenses[list(groups).index(view_rel)]
    ids = (
        encode(adapter.tokenizer, opts.view_text, prepend_bos)
        if opts.view_text
        else groups[view_rel][opts.n_train].ids
    )
    return lenses, table, faithfulness_summary(table), attribute_view(adapter, lens, ids)
