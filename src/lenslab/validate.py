"""Check a whole study against its models before any job runs.

Called by the Snakefile while it builds the DAG (``workflow/rules/common.smk``), so every stage
meets the same clear error instead of some stages crashing deep inside torch. What is checked,
for every model and every prompt set a figure uses:

* each prompt encodes (targets and answers one token, the subject found) and fits the model's
  context (``n_positions`` / ``max_position_embeddings``, read without loading weights);
* no word becomes the unknown token of a word-level tokenizer (the embedded model's);
* each pair aligns by its own ``align`` rule; F13 patching, which restores states position by
  position, needs equal token counts whatever ``align`` says;
* figure options: unknown keys, values out of range, prompt ids and pair names that do not exist.

The model's tokenizer and size come from its config files (a local directory or the local
Hugging Face cache) or, for the embedded model, from its settings. A hub model that is not cached
cannot be checked here; its jobs still check the context length when they load it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenslab.errors import LensLabError
from lenslab.prompts import EncodedPrompt, align_pair, encode_prompt, same_length

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclass
class ModelFacts:
    """What the checks need to know about a model: its tokenizer, context and depth."""

    name: str
    tokenizer: Any
    n_ctx: int | None
    n_layers: int | None
    prepend_bos: bool | None


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if hasattr(obj, "get") else getattr(obj, key, default)


# -- model facts without loading weights --------------------------------------------------------
def _from_config_json(config: Mapping[str, Any]) -> tuple[int | None, int | None]:
    text = config.get("text_config") or {}
    pick = lambda *keys: next(  # noqa: E731
        (c[k] for c in (config, text) for k in keys if isinstance(c.get(k), int)), None
    )
    return pick("n_positions", "max_position_embeddings", "n_ctx"), pick(
        "n_layer", "num_hidden_layers", "num_layers"
    )


def check_tokenizer_files(path: str | Path) -> None:
    """A local model directory must hold tokenizer files; without them transformers builds an
    empty tokenizer and every prompt later "encodes to no tokens"."""
    path = Path(path)
    if path.is_dir() and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise LensLabError(
            f"model directory {path} has no tokenizer files (none of {list(TOKENIZER_FILES)})",
            fix="save the tokenizer next to the weights (tokenizer.save_pretrained(dir)) or "
            "point `source` at a directory or hub id that has one",
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


def check_set(facts: ModelFacts, set_name: str, prompt_set: Any) -> dict[str, EncodedPrompt]:
    rule = _get(prompt_set, "multi_token", "first") or "first"
    checked = (check_prompt(facts, set_name, q, rule) for q in prompt_set.prompts)
    encoded = {p.id: p for p in checked}
    for pair in prompt_set.pairs:
        try:
            align_pair(encoded[pair.clean], encoded[pair.corrupt], pair.align)
        except LensLabError as err:
            raise LensLabError(f"prompt set {set_name}, model {facts.name!r}: {err}") from err
    return encoded


# -- figure options -------------------------------------------------------------------------
@dataclass
class FigureContext:
    fid: str
    options: dict[str, Any]
    set_name: str
    prompt_set: Any
    encoded: dict[str, EncodedPrompt]
    facts: ModelFacts
    cfg: Any


def _keys(ctx: FigureContext, valid: tuple[str, ...]) -> None:
    unknown = sorted(set(ctx.options) - set(valid))
    if unknown:
        raise LensLabError(
            f"study figure {ctx.fid}: unknown option(s) {unknown}",
            fix=f"use only {sorted(valid)}" if valid else f"{ctx.fid} takes no options",
        )


def _int_in(ctx: FigureContext, key: str, lo: int, hi: int | None = None) -> None:
    value = ctx.options.get(key)
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < lo
        or (hi is not None and value > hi)
    ):
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise LensLabError(
            f"study figure {ctx.fid}: option {key}={value!r} is out of range",
            fix=f"use an integer {span}",
        )


def _prompt_id(ctx: FigureContext, key: str = "prompt") -> str | None:
    want = ctx.options.get(key)
    ids = list(ctx.encoded)
    if want is None:
        return None
    if isinstance(want, int) and not isinstance(want, bool) and 0 <= want < len(ids):
        return ids[want]
    if want not in ids:
        raise LensLabError(
            f"study figure {ctx.fid}: option {key}={want!r} is not a prompt of set {ctx.set_name}",
            fix=f"use one of {ids}",
        )
    return str(want)


def _f1(ctx: FigureContext) -> None:
    _keys(ctx, ("pair",))
    pairs = [f"{p.clean}|{p.corrupt}" for p in ctx.prompt_set.pairs]
    if not pairs:
        raise LensLabError(
            f"study figure F1 uses prompt set {ctx.set_name}, which has no pairs",
            fix="add `pairs: [{clean: <id>, corrupt: <id>}]` to the prompt set",
        )
    pair = ctx.options.get("pair")
    if pair is not None and pair not in pairs:
        raise LensLabError(
            f"study figure F1: option pair={pair!r} is not a pair of set {ctx.set_name}",
            fix=f"use one of {pairs} (clean|corrupt)",
        )


def _logit_view(ctx: FigureContext) -> None:
    from lenslab.figures.logit_lens import parse_view_options

    parse_view_options(ctx.options)
    _prompt_id(ctx)
    lens = ctx.options.get("lens")
    lenses = list(_get(ctx.cfg.lens, "lenses", []) or [])
    if lens is not None and lens not in lenses:
        raise LensLabError(
            f"study figure {ctx.fid}: option lens={lens!r} is not an applied lens",
            fix=f"use one of {lenses} or add it to lens.lenses",
        )


def _f7(ctx: FigureContext) -> None:
    from lenslab.figures.tuned_lens import f7_options

    f7_options(ctx.options)
    _prompt_id(ctx)
    _int_in(ctx, "max_rows", 1)


def _f13(ctx: FigureContext) -> None:
    from lenslab.patching.config import parse_config, resolve_mode
    from lenslab.patching.metrics import METRICS

    _keys(ctx, ("metric", "window", "prompt_ids", "max_prompts"))
    metric = ctx.options.get("metric", "norm_ld")
    if metric not in METRICS:
        raise LensLabError(f"study figure F13: metric={metric!r}", fix=f"use one of {METRICS}")
    _int_in(ctx, "window", 1)
    _int_in(ctx, "max_prompts", 1)
    for pid in ctx.options.get("prompt_ids") or []:
        _prompt_id(FigureContext(**{**ctx.__dict__, "options": {"prompt": pid}}))
    settings = parse_config(ctx.cfg.patching, ctx.set_name)
    if resolve_mode(settings.mode, ctx.prompt_set) == "pairs":
        for pair in ctx.prompt_set.pairs:
            same_length(ctx.encoded[pair.clean], ctx.encoded[pair.corrupt], "F13 patching")


def _f15(ctx: FigureContext) -> None:
    _keys(ctx, ("layer", "position", "prompt", "normalise"))
    pid = _prompt_id(ctx) or next(iter(ctx.encoded))
    n_pos = len(ctx.encoded[pid].input_ids)
    _int_in(ctx, "position", -n_pos, n_pos - 1)
    if ctx.facts.n_layers is not None:
        _int_in(ctx, "layer", -(ctx.facts.n_layers + 1), ctx.facts.n_layers)
    if not isinstance(ctx.options.get("normalise", True), bool):
        raise LensLabError("study figure F15: normalise must be true or false", fix="use true")


def _f17(ctx: FigureContext) -> None:
    from lenslab.figures.distances import parse_distance_options

    parse_distance_options(ctx.options)


def _f16(ctx: FigureContext) -> None:
    _keys(ctx, ("max_ahead",))
    _int_in(ctx, "max_ahead", 1)


def _none(ctx: FigureContext) -> None:
    _keys(ctx, ())


# Figure id -> its options check. Figures not listed here (new stages) check their own options.
FIGURE_CHECKS: dict[str, Callable[[FigureContext], None]] = {
    "F1": _f1,
    **{fid: _logit_view for fid in ("F2", "F3", "F4", "F5", "F6")},
    "F7": _f7,
    "F8": _none,
    "F10": _none,
    "F13": _f13,
    "F13b": _f13,
    "F14": _none,
    "F15": _f15,
    "F16": _f16,
    "F16b": _none,
    "F17": _f17,
}


# -- the whole study ------------------------------------------------------------------------
def validate_study(
    cfg: Any, model_paths: Mapping[str, str | None], notes: dict[str, Any] | None = None
) -> list[str]:
    """Check every prompt set a figure uses against every model, and every figure's options.

    ``model_paths``: where each model's files are (None for the embedded model, whose facts come
    from its settings). Returns the names of models that could not be checked (hub models not in
    the local cache). Raises :class:`LensLabError` on the first problem. ``notes``, when
    given, receives per model and prompt set the answer/target words of several tokens and
    their pieces (tracked by their first token; the report lists them).
    """
    unchecked = []
    used = {name for fig in cfg.study.figures.values() for name in fig.prompts}
    for key, model_cfg in cfg.models.items():
        facts = model_facts(model_cfg, model_paths.get(key))
        if facts is None:
            unchecked.append(key)
            continue
        encoded = {name: check_set(facts, name, cfg.prompts[name]) for name in sorted(used)}
        if notes is not None:
            for name, prompts in encoded.items():
                split = {w: ps for p in prompts.values() for w, ps in p.multi_token.items()}
                if split:
                    notes.setdefault(key, {})[name] = dict(sorted(split.items()))
        for fid, fig in cfg.study.figures.items():
            check = FIGURE_CHECKS.get(fid)
            for name in fig.prompts if check else []:
                options = dict(_get(fig, "options") or {})
                check(
                    FigureContext(fid, options, name, cfg.prompts[name], encoded[name], facts, cfg)
                )
    return unchecked
