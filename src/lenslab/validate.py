"""Check a whole study against its models before any job runs.

Called by the Snakefile while it builds the DAG (``workflow/rules/common.smk``), so every stage
meets the same clear error instead of some stages crashing deep inside torch. What is checked,
for every model and every prompt set a figure uses:

* each prompt encodes (targets and answers one token, the subject found) and fits the model's
  context (``n_positions`` / ``max_position_embeddings``, read without loading weights);
* no word becomes the unknown token of a word-level tokenizer (the embedded model's);
* each pair aligns by its own ``align`` rule; F13 patching, which restores states position by
  position, needs equal token counts whatever ``align`` says;
* figure options: every figure's against its schema (``lenslab.options`` through
  ``lenslab.figspec``: unknown keys, wrong types, values out of range), then against its prompt
  set and model (prompt ids and pairs that do not exist, positions and layers out of range,
  patchscope targets and texts with words the model does not know).

The model's tokenizer and size come from its config files (a local directory or the local
Hugging Face cache) or, for the embedded model, from its settings. A hub model that is not cached
cannot be checked here; its jobs still check the context length when they load it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenslab.config import cfg_get as _get
from lenslab.config import to_plain
from lenslab.errors import LensLabError
from lenslab.figspec import parse_figure_options
from lenslab.models.files import check_tokenizer_files
from lenslab.prompts import (
    EncodedPrompt,
    align_pair,
    encode_prompt,
    multi_token_words,
    same_length,
    served,
    served_pairs,
)


@dataclass
class ModelFacts:
    """What the checks need to know about a model: its tokenizer, context and depth."""

    name: str
    tokenizer: Any
    n_ctx: int | None
    n_layers: int | None
    prepend_bos: bool | None


# -- model facts without loading weights --------------------------------------------------------
def _from_config_json(config: Mapping[str, Any]) -> tuple[int | None, int | None]:
    text = config.get("text_config") or {}
    pick = lambda *keys: next(  # noqa: E731
        (c[k] for c in (config, text) for k in keys if isinstance(c.get(k), int)), None
    )
    return pick("n_positions", "max_position_embeddings", "n_ctx"), pick(
        "n_layer", "num_hidden_layers", "num_layers"
    )


def model_facts(model_cfg: Any, path: str | None) -> ModelFacts | None:
    """Tokenizer, context length and depth of a model; None when they cannot be had offline."""
    name = str(_get(model_cfg, "name"))
    bos = _get(model_cfg, "prepend_bos")
    if _get(model_cfg, "source") == "embedded":
        from lenslab.embedded.settings import parse_settings
        from lenslab.embedded.tokenizer import build_tokenizer

        try:
            s = parse_settings(_get(model_cfg, "embedded"))
        except ValueError as err:
            raise LensLabError(f"models.{name}.embedded: {err}", fix="correct the setting") from err
        return ModelFacts(name, build_tokenizer(max_length=s.seq_len), s.seq_len, s.n_layer, bos)
    source = Path(str(path or _get(model_cfg, "source")))
    if _get(model_cfg, "source") == "gguf" and not source.is_dir():
        return None  # not converted yet: its jobs check prompts once convert_gguf has run
    if source.is_dir():
        check_tokenizer_files(source)
        if not (source / "config.json").exists():
            raise LensLabError(
                f"model directory {source} has no config.json",
                fix="point `source` at a directory written by save_pretrained, or a hub id",
            )
        config = json.loads((source / "config.json").read_text())
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source))
        return ModelFacts(name, tokenizer, *_from_config_json(config), bos)
    return _cached_hub_facts(name, str(source), _get(model_cfg, "revision"), bos)


def _cached_hub_facts(name: str, repo: str, revision: str | None, bos) -> ModelFacts | None:
    """A hub model's facts from the local cache only (never downloads while building a DAG)."""
    from transformers import AutoTokenizer
    from transformers.utils import cached_file

    try:
        config_file = cached_file(repo, "config.json", revision=revision, local_files_only=True)
        if config_file is None:
            return None
        tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision, local_files_only=True)
    except (OSError, ValueError):
        return None
    config = json.loads(Path(config_file).read_text())
    return ModelFacts(name, tokenizer, *_from_config_json(config), bos)


# -- prompts --------------------------------------------------------------------------------
def unknown_words(tokenizer, text: str) -> list[str]:
    """Pieces of ``text`` that a tokenizer with an unknown token maps to it.

    A special token written out in the text (``<|endoftext|>``) is not unknown even when the
    tokenizer's unknown token shares its id (SmolLM2: unk = ``<|endoftext|>`` = id 0)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not text:
        return []
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [
        text[a:b]
        for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
        if i == unk and text[a:b] not in specials
    ]


def check_prompt(
    facts: ModelFacts, set_name: str, prompt: Any, multi_token: str = "first"
) -> EncodedPrompt:
    """Encode one prompt, refusing unknown words and prompts longer than the context."""
    pid = _get(prompt, "id")
    words = [_get(prompt, "text"), _get(prompt, "answer") or "", *(_get(prompt, "targets") or [])]
    unknown = [w for text in words for w in unknown_words(facts.tokenizer, text)]
    if unknown:
        raise LensLabError(
            f"prompt {set_name}/{pid}: model {facts.name!r} does not know the word(s) "
            f"{sorted(set(unknown))}: its word-level tokenizer would read them as "
            f"{facts.tokenizer.unk_token!r}",
            fix="use words of the model's vocabulary (for the embedded model: the words of "
            "src/lenslab/embedded/world.py)",
        )
    try:
        encoded = encode_prompt(facts.tokenizer, prompt, facts.prepend_bos, multi_token)
    except LensLabError as err:
        problem = f"prompt {set_name}/{pid}, model {facts.name!r}: {err.problem}"
        raise LensLabError(problem, err.fix) from err
    if facts.n_ctx is not None and len(encoded.input_ids) > facts.n_ctx:
        raise LensLabError(
            f"prompt {set_name}/{pid} is {len(encoded.input_ids)} tokens, longer than the "
            f"context of model {facts.name!r} ({facts.n_ctx} tokens)",
            fix="shorten the prompt or use a model with a longer context",
        )
    return encoded


def note_tokens(notes, model, set_name, prompt_set, kept, tokenizer) -> None:
    """The report's note on one set for one model: words tracked by their first token, and
    prompts left out (``multi_token: drop``) with the words that split."""
    split = {w: ps for p in kept.values() for w, ps in p.multi_token.items()}
    dropped = {}
    for q in _get(prompt_set, "prompts"):
        if _get(q, "id") not in kept:
            words = [_get(q, "answer") or "", *(_get(q, "targets") or [])]
            dropped[_get(q, "id")] = multi_token_words(tokenizer, [w for w in words if w])
    entry = {}
    if split:
        entry["tracked by their first token"] = dict(sorted(split.items()))
    if dropped:
        entry["prompts left out (multi_token: drop)"] = dropped
    if entry:
        notes.setdefault(model, {})[set_name] = entry


def check_set(facts: ModelFacts, set_name: str, prompt_set: Any) -> dict[str, EncodedPrompt]:
    rule = _get(prompt_set, "multi_token", "first") or "first"
    checked = (check_prompt(facts, set_name, q, rule) for q in prompt_set.prompts)
    kept = served(list(checked), rule, f"{set_name}, model {facts.name!r}")
    encoded = {p.id: p for p in kept}
    for pair in served_pairs(prompt_set, encoded):
        try:
            align_pair(encoded[pair.clean], encoded[pair.corrupt], pair.align)
        except LensLabError as err:
            raise LensLabError(f"prompt set {set_name}, model {facts.name!r}: {err}") from err
    return encoded


# -- figure options -------------------------------------------------------------------------
@dataclass
class FigureContext:
    fid: str
    options: Any  # the parsed options (lenslab.options)
    set_name: str
    prompt_set: Any
    encoded: dict[str, EncodedPrompt]
    facts: ModelFacts
    cfg: Any


def _int_in(ctx: FigureContext, key: str, lo: int, hi: int | None = None) -> None:
    value = getattr(ctx.options, key)
    if value is not None and not (lo <= value and (hi is None or value <= hi)):
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise LensLabError(
            f"study figure {ctx.fid}: option {key}={value!r} is out of range for prompt set "
            f"{ctx.set_name} and model {ctx.facts.name!r}",
            fix=f"use an integer {span}",
        )


def _prompt_id(ctx: FigureContext, want: str | int | None) -> str | None:
    ids = list(ctx.encoded)
    if want is None:
        return None
    if isinstance(want, int) and not isinstance(want, bool) and 0 <= want < len(ids):
        return ids[want]
    if want not in ids:
        raise LensLabError(
            f"study figure {ctx.fid}: prompt {want!r} is not a prompt of set {ctx.set_name}",
            fix=f"use one of {ids}",
        )
    return str(want)


def _known_text(ctx: FigureContext, key: str, text: str | None) -> None:
    """A text option (a patchscope target, the attribute lens's view text) encodes for the
    model with no word it does not know."""
    if text is None:
        return
    unknown = unknown_words(ctx.facts.tokenizer, text)
    if unknown:
        raise LensLabError(
            f"study figure {ctx.fid}: option {key} has word(s) {unknown} that model "
            f"{ctx.facts.name!r} does not know (its tokenizer makes them unknown tokens)",
            fix="write the text in the model's vocabulary (for the embedded model: the "
            "world's words, see conf/prompts/embedded_*.yaml)",
        )


def _f1(ctx: FigureContext) -> None:
    pairs = [f"{p.clean}|{p.corrupt}" for p in ctx.prompt_set.pairs]
    if not pairs:
        raise LensLabError(
            f"study figure F1 uses prompt set {ctx.set_name}, which has no pairs",
            fix="add `pairs: [{clean: <id>, corrupt: <id>}]` to the prompt set",
        )
    if ctx.options.pair is not None and ctx.options.pair not in pairs:
        raise LensLabError(
            f"study figure F1: option pair={ctx.options.pair!r} is not a pair of set "
            f"{ctx.set_name}",
            fix=f"use one of {pairs} (clean|corrupt)",
        )


def _logit_view(ctx: FigureContext) -> None:
    _prompt_id(ctx, ctx.options.prompt)
    lens = ctx.options.lens
    lenses = list(_get(ctx.cfg.lens, "lenses", []) or [])
    if lens is not None and lens not in lenses:
        raise LensLabError(
            f"study figure {ctx.fid}: option lens={lens!r} is not an applied lens",
            fix=f"use one of {lenses} or add it to lens.lenses",
        )


def _f7(ctx: FigureContext) -> None:
    _prompt_id(ctx, ctx.options.prompt)


def _f9(ctx: FigureContext) -> None:
    _known_text(ctx, "view_text", ctx.options.view_text)


def _f13(ctx: FigureContext) -> None:
    from lenslab.patching.config import parse_config, resolve_mode

    for pid in ctx.options.prompt_ids or []:
        _prompt_id(ctx, pid)
    settings = parse_config(ctx.cfg.patching, ctx.set_name)
    if resolve_mode(settings.mode, ctx.prompt_set) == "pairs":
        for pair in ctx.prompt_set.pairs:
            same_length(ctx.encoded[pair.clean], ctx.encoded[pair.corrupt], "F13 patching")


def _f13c(ctx: FigureContext) -> None:
    from lenslab.patching.config import parse_atp_config, parse_config, resolve_mode

    _prompt_id(ctx, ctx.options.prompt)
    parse_atp_config(_get(ctx.cfg, "atp", None))
    settings = parse_config(ctx.cfg.patching, ctx.set_name)
    if resolve_mode(settings.mode, ctx.prompt_set) == "pairs":
        for pair in ctx.prompt_set.pairs:
            same_length(ctx.encoded[pair.clean], ctx.encoded[pair.corrupt], "F13c patching")


def _patchscope(ctx: FigureContext) -> None:
    _known_text(ctx, "target", ctx.options.target)


def _f15(ctx: FigureContext) -> None:
    pid = _prompt_id(ctx, ctx.options.prompt) or next(iter(ctx.encoded))
    n_pos = len(ctx.encoded[pid].input_ids)
    _int_in(ctx, "position", -n_pos, n_pos - 1)
    if ctx.facts.n_layers is not None:
        _int_in(ctx, "layer", -(ctx.facts.n_layers + 1), ctx.facts.n_layers)


def _f16c(ctx: FigureContext) -> None:
    _prompt_id(ctx, ctx.options.prompt)


# Checks of a figure's options against its prompt set and model (the options' own keys, types
# and ranges are checked by their schema, lenslab.options, through lenslab.figspec).
CONTEXT_CHECKS: dict[str, Callable[[FigureContext], None]] = {
    "F1": _f1,
    **{fid: _logit_view for fid in ("F2", "F3", "F4", "F5", "F6")},
    "F7": _f7,
    "F9": _f9,
    "F11": _patchscope,
    "F12": _patchscope,
    "F13": _f13,
    "F13b": _f13,
    "F13c": _f13c,
    "F15": _f15,
    "F16c": _f16c,
    "F18": _f16c,  # its prompt must be in the set
}


def _hub_offline() -> bool:
    return any(
        os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_device(device: str | None, device_map: str | None) -> None:
    """A GPU the model asks for must exist (torch only when one is asked for)."""
    if str(device or "cpu") == "cpu" and device_map is None:
        return
    from lenslab.devices import check_device as check  # imports torch

    check(device, device_map)


# -- the whole study ------------------------------------------------------------------------
def _check_drift(cfg: Any) -> None:
    """F8 draws the drift matrices, which ``tuned_lens.eval.drift_windows: 0`` leaves out."""
    evaluation = _get(_get(cfg, "tuned_lens") or {}, "eval") or {}
    if "F8" in cfg.study.figures and _get(evaluation, "drift_windows") == 0:
        raise LensLabError(
            "study figure F8 draws representational drift, but tuned_lens.eval.drift_windows "
            "is 0, so none is computed",
            fix="set tuned_lens.eval.drift_windows >= 1, or take F8 out of the study",
        )


def validate_study(
    cfg: Any,
    model_paths: Mapping[str, str | None],
    check_devices: bool = True,
    need_models: bool = True,
    notes: dict[str, Any] | None = None,
) -> list[str]:
    """Check every prompt set a figure uses against every model, and every figure's options.

    ``model_paths``: where each model's files are (None for the embedded model, whose facts come
    from its settings). Returns the names of models that could not be checked (hub models not in
    the local cache). Raises :class:`LensLabError` on the first problem. ``check_devices``:
    whether a GPU a model asks for must be visible here (not when jobs run on cluster nodes);
    ``need_models``: whether jobs will load the models now (not for a dry run), so a hub model
    that is neither cached nor reachable is an error here. ``notes``, when
    given, receives per model and prompt set the answer/target words of several tokens and
    their pieces (tracked by their first token), and the prompts ``multi_token: drop`` left
    out; the report lists both.
    """
    # Every figure's options against its schema first: no model needed, so hub models too.
    options_of = {
        fid: parse_figure_options(fid, to_plain(_get(fig, "options")))
        for fid, fig in cfg.study.figures.items()
    }
    _check_drift(cfg)
    unchecked = []
    used = {name for fig in cfg.study.figures.values() for name in fig.prompts}
    for name in sorted(used):
        if not cfg.prompts[name].prompts:
            raise LensLabError(
                f"prompt set {name} has no prompts, but figures "
                f"{sorted(f for f, fig in cfg.study.figures.items() if name in fig.prompts)} use it",
                fix=f"add prompts to conf/prompts/{name}.yaml or take the set out of the figures",
            )
    for key, model_cfg in cfg.models.items():
        if check_devices:
            check_device(_get(model_cfg, "device"), _get(model_cfg, "device_map"))
        facts = model_facts(model_cfg, model_paths.get(key))
        hub = _get(model_cfg, "source") not in ("embedded", "gguf")  # built by a rule otherwise
        if facts is None and hub and need_models and _hub_offline():
            raise LensLabError(
                f"model {key!r} ({_get(model_cfg, 'source')}) is not in the local Hugging Face "
                "cache, and the hub is offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)",
                fix="download it where the hub is reachable (or set HF_HOME to a cache that has "
                "it), point `source` at a local directory, or take the model out of the study",
            )
        if facts is None:
            unchecked.append(key)
            continue
        encoded = {name: check_set(facts, name, cfg.prompts[name]) for name in sorted(used)}
        if notes is not None:
            for name, prompts in encoded.items():
                note_tokens(notes, key, name, cfg.prompts[name], prompts, facts.tokenizer)
        for fid, fig in cfg.study.figures.items():
            check = CONTEXT_CHECKS.get(fid)
            for name in fig.prompts if check else []:
                options = options_of[fid]
                check(
                    FigureContext(fid, options, name, cfg.prompts[name], encoded[name], facts, cfg)
                )
    return unchecked
