"""Prompt sets: tokenisation, single-token words, subject spans and clean/corrupt alignment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lenslab.config import MULTI_TOKEN_RULES
from lenslab.config import cfg_get as _get
from lenslab.errors import LensLabError


@dataclass
class EncodedPrompt:
    """One prompt as the model sees it."""

    id: str
    text: str
    input_ids: list[int]
    tokens: list[str]  # decoded text of each token, for labels
    subject_positions: list[int] = field(default_factory=list)
    answer_id: int | None = None
    target_ids: dict[str, int] = field(default_factory=dict)
    # Answer/target words that are several tokens for this tokenizer -> their pieces; such a
    # word is tracked by its first token (``MULTI_TOKEN_RULES``), as the literature scores them.
    multi_token: dict[str, list[str]] = field(default_factory=dict)


# How an answer or target word of several tokens is tracked (MULTI_TOKEN_RULES): "first" by its
# first token (the convention of ROME's and the LRE papers' scoring, and lenslab's default);
# "drop" leaves the prompt out for that model (and any pair it is in), listed in the report;
# "error" refuses it.


def word_pieces(tokenizer, word: str) -> list[int]:
    """Token ids of ``word`` as it follows a space."""
    return tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]


def word_id(tokenizer, word: str, multi_token: str = "first") -> int:
    """The token id that stands for ``word`` (after a space): its only token, or for a word of
    several tokens its first (``multi_token="first"``) or an error (``"error"``)."""
    if multi_token not in MULTI_TOKEN_RULES:
        raise LensLabError(f"multi_token={multi_token!r}", fix=f"use one of {MULTI_TOKEN_RULES}")
    ids = word_pieces(tokenizer, word)
    if not ids:
        raise LensLabError(f"target word {word!r} encodes to no tokens", fix="give a word")
    if len(ids) > 1 and multi_token == "error":
        pieces = [tokenizer.decode([i]) for i in ids]
        raise LensLabError(
            f"target word {word.strip()!r} is {len(ids)} tokens for this tokenizer ({pieces})",
            fix="choose a word that is a single token with a leading space, or set the prompt "
            "set's `multi_token: first` to track its first token",
        )
    return ids[0]


def multi_token_words(tokenizer, words: list[str]) -> dict[str, list[str]]:
    """The words of ``words`` that are several tokens, with their pieces (for captions/notes)."""
    out = {}
    for w in words:
        ids = word_pieces(tokenizer, w)
        if len(ids) > 1:
            out[w.strip()] = [tokenizer.decode([i]) for i in ids]
    return out


def encode(tokenizer, text: str, prepend_bos: bool | None = None) -> list[int]:
    """Token ids of ``text``; ``prepend_bos`` None keeps the tokenizer's own choice."""
    ids = tokenizer(text, add_special_tokens=prepend_bos is None)["input_ids"]
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    if not ids:
        raise LensLabError(f"prompt {text!r} encodes to no tokens", fix="give it some text")
    return ids


def subject_positions(tokenizer, text: str, subject: str, input_ids: list[int]) -> list[int]:
    """Token positions covering the last occurrence of ``subject`` in ``text``."""
    start = text.rfind(subject)
    if start < 0:
        raise LensLabError(
            f"subject {subject!r} does not occur in prompt {text!r}",
            fix="make `subject` an exact substring of the prompt text",
        )
    end = start + len(subject)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    shift = len(input_ids) - len(offsets["input_ids"])  # a prepended BOS moves every position
    return [
        i + shift for i, (a, b) in enumerate(offsets["offset_mapping"]) if a < end and b > start
    ]


def encode_prompt(
    tokenizer, prompt: Any, prepend_bos: bool | None = None, multi_token: str = "first"
) -> EncodedPrompt:
    text = _get(prompt, "text")
    ids = encode(tokenizer, text, prepend_bos)
    subject = _get(prompt, "subject")
    answer = _get(prompt, "answer")
    targets = list(_get(prompt, "targets", []) or [])
    return EncodedPrompt(
        id=_get(prompt, "id"),
        text=text,
        input_ids=ids,
        tokens=[tokenizer.decode([i]) for i in ids],
        subject_positions=subject_positions(tokenizer, text, subject, ids) if subject else [],
        answer_id=word_id(tokenizer, answer, multi_token) if answer else None,
        target_ids={w: word_id(tokenizer, w, multi_token) for w in targets},
        multi_token=multi_token_words(tokenizer, ([answer] if answer else []) + targets),
    )


def encode_set(tokenizer, prompt_set: Any, prepend_bos: bool | None = None) -> list[EncodedPrompt]:
    """Every prompt of a prompt-set config this tokenizer can serve, in order (``multi_token:
    drop`` leaves out those with a word of several tokens)."""
    rule = _get(prompt_set, "multi_token", "first") or "first"
    encoded = [encode_prompt(tokenizer, p, prepend_bos, rule) for p in _get(prompt_set, "prompts")]
    return served(encoded, rule, repr(_get(prompt_set, "name")))


def served(encoded: list[EncodedPrompt], rule: str, where: str) -> list[EncodedPrompt]:
    """The prompts a tokenizer can serve under ``rule`` (``drop`` leaves out those with a word
    of several tokens); none left is an error naming ``where``."""
    kept = [p for p in encoded if not (rule == "drop" and p.multi_token)]
    if not kept:
        raise LensLabError(
            f"prompt set {where}: every prompt has a word of several tokens for this "
            "tokenizer, and `multi_token: drop` leaves none",
            fix="use `multi_token: first`, or words that are one token for this model",
        )
    return kept


def served_pairs(prompt_set: Any, encoded: dict[str, EncodedPrompt]) -> list[Any]:
    """The set's ``pairs:`` whose two prompts were both kept for this model."""
    return [
        pair
        for pair in _get(prompt_set, "pairs") or []
        if _get(pair, "clean") in encoded and _get(pair, "corrupt") in encoded
    ]


def align_pair(
    clean: EncodedPrompt, corrupt: EncodedPrompt, rule: str = "strict"
) -> list[tuple[int, int]]:
    """(clean position, corrupt position) pairs compared with each other.

    ``strict``
    demands equal token counts; ``left`` compares the common prefix length; ``right`` aligns the
    ends (useful when the prompts differ only near the start).
    """
    n, m = len(clean.input_ids), len(corrupt.input_ids)
    if rule == "strict":
        if n != m:
            raise LensLabError(
                f"prompts {clean.id!r} ({n} tokens) and {corrupt.id!r} ({m} tokens) do not align: "
                f"{clean.tokens} vs {corrupt.tokens}",
                fix="reword one prompt so both have the same token count, or set "
                "`align: left` or `align: right` on the pair",
            )
        return [(i, i) for i in range(n)]
    k = min(n, m)
    if rule == "left":
        return [(i, i) for i in range(k)]
    if rule == "right":
        return [(n - k + i, m - k + i) for i in range(k)]
    raise LensLabError(f"unknown align rule {rule!r}", fix="use strict, left or right")


def same_length(clean: EncodedPrompt, corrupt: EncodedPrompt, stage: str) -> None:
    """Stages that restore states position by position (F13 patching) need equal token counts,
    whatever the pair's ``align`` says: ``align`` only tells F1 which positions to compare."""
    n, m = len(clean.input_ids), len(corrupt.input_ids)
    if n != m:
        raise LensLabError(
            f"{stage} needs pairs of equal token counts, but {clean.id!r} has {n} tokens and "
            f"{corrupt.id!r} has {m} ({clean.tokens} vs {corrupt.tokens}); a pair's `align` "
            "applies to F1 only, since patching restores each state at the same position",
            fix="reword one prompt so both have the same token count, or patch this prompt set "
            "with noise (patching.prompt_sets.<set>.mode: noise)",
        )
