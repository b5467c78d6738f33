"""Prompt sets: tokenisation, single-token words, subject spans and clean/corrupt alignment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def word_id(tokenizer, word: str) -> int:
    """The single token id of ``word`` as it follows a space; several tokens is an error."""
    word = word.strip()
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise LensLabError(
            f"target word {word!r} is {len(ids)} tokens for this tokenizer ({pieces})",
            fix="choose a word that is a single token with a leading space, or track its "
            "first token explicitly by naming that piece",
        )
    return ids[0]


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


def encode_prompt(tokenizer, prompt: Any, prepend_bos: bool | None = None) -> EncodedPrompt:
    text = _get(prompt, "text")
    ids = encode(tokenizer, text, prepend_bos)
    subject = _get(prompt, "subject")
    answer = _get(prompt, "answer")
    return EncodedPrompt(
        id=_get(prompt, "id"),
        text=text,
        input_ids=ids,
        tokens=[tokenizer.decode([i]) for i in ids],
        subject_positions=subject_positions(tokenizer, text, subject, ids) if subject else [],
        answer_id=word_id(tokenizer, answer) if answer else None,
        target_ids={w: word_id(tokenizer, w) for w in _get(prompt, "targets", []) or []},
    )


def encode_set(tokenizer, prompt_set: Any, prepend_bos: bool | None = None) -> list[EncodedPrompt]:
    """Every prompt of a prompt-set config, in order."""
    return [encode_prompt(tokenizer, p, prepend_bos) for p in _get(prompt_set, "prompts")]


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
