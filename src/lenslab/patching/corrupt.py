"""Patching cases: what is clean, what is corrupted, and which answers are compared.

Two corruption modes, chosen per prompt set by the ``patching`` config:

``pairs``
    each ``pairs:`` entry of the prompt set (e.g. "The capital of France is" -> Paris vs "The
    capital of Germany is" -> Berlin). Both prompts must have the same token count (the pair is
    aligned ``strict`` whatever its ``align`` says, since states are restored position by
    position). The corrupt answer is the corrupt prompt's ``answer``, or else the corrupted
    run's top-1 token other than the clean answer.
``noise``
    ROME: Gaussian noise with std ``noise_scale`` x the std of the input embedding matrix is
    added to the token embeddings of the subject tokens, ``noise_samples`` seeded samples per
    prompt. The corrupt answer is the top-1 token (other than the clean answer) of the mean
    probability over the noisy runs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lenslab.config import cfg_get as _get
from lenslab.errors import LensLabError
from lenslab.models.adapter import ModelAdapter
from lenslab.patching.run import embedding_std
from lenslab.prompts import EncodedPrompt, encode_set, same_length, served_pairs


@dataclass
class Case:
    """One clean prompt and its corruption (a second prompt, or embedding noise)."""

    id: str
    corrupt: str  # corrupt prompt id, or "noise"
    mode: str
    clean_ids: list[int]
    tokens: list[str]
    subject: list[int]
    clean_answer: int
    corrupt_ids: list[int] | None = None
    corrupt_tokens: list[str] = field(default_factory=list)
    corrupt_answer: int | None = None  # None: the corrupted run's top-1 other than the answer
    noise: Tensor | None = None  # [S, T, D]


def _answer(p: EncodedPrompt) -> int:
    if p.answer_id is None:
        raise LensLabError(
            f"prompt {p.id!r} has no `answer`, so patching has nothing to restore",
            fix="give the prompt the expected next word as `answer` (one token)",
        )
    return p.answer_id


def pair_cases(tokenizer, prompt_set: Any, prepend_bos: bool | None = None) -> list[Case]:
    """One case per ``pairs:`` entry; unequal token counts are an error."""
    pairs = _get(prompt_set, "pairs") or []
    if not pairs:
        raise LensLabError(
            f"prompt set {_get(prompt_set, 'name')!r} has no `pairs:` for pairs-mode patching",
            fix="add clean/corrupt pairs to the prompt set, or set the patching mode to noise",
        )
    encoded = {p.id: p for p in encode_set(tokenizer, prompt_set, prepend_bos)}
    pairs = served_pairs(prompt_set, encoded)
    if not pairs:
        raise LensLabError(
            f"prompt set {_get(prompt_set, 'name')!r}: no pair is left for this model "
            "(`multi_token: drop` left out a prompt of each)",
            fix="use `multi_token: first`, or answers that are one token for this model",
        )
    cases = []
    for pair in pairs:
        clean, corrupt = encoded[_get(pair, "clean")], encoded[_get(pair, "corrupt")]
        same_length(clean, corrupt, "F13 patching")
        differ = [
            i
            for i, (a, b) in enumerate(zip(clean.input_ids, corrupt.input_ids, strict=True))
            if a != b
        ]
        if not differ:
            raise LensLabError(
                f"pair {clean.id!r}/{corrupt.id!r}: the prompts are the same tokens",
                fix="pair prompts that differ (e.g. in the subject)",
            )
        answer = _answer(clean)
        if corrupt.answer_id == answer:
            raise LensLabError(
                f"pair {clean.id!r}/{corrupt.id!r}: both prompts have the answer "
                f"{tokenizer.decode([answer])!r}, so the logit difference is 0",
                fix="pair prompts with different answers",
            )
        cases.append(
            Case(
                id=clean.id,
                corrupt=corrupt.id,
                mode="pairs",
                clean_ids=clean.input_ids,
                tokens=clean.tokens,
                subject=clean.subject_positions or differ,
                clean_answer=answer,
                corrupt_ids=corrupt.input_ids,
                corrupt_tokens=corrupt.tokens,
                corrupt_answer=corrupt.answer_id,
            )
        )
    return cases


def subject_noise(
    n_tokens: int,
    subject: list[int],
    d_model: int,
    std: float,
    samples: int,
    seed: int,
) -> Tensor:
    """``[samples, T, D]`` Gaussian noise of ``std`` at the subject positions, zero elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.zeros(samples, n_tokens, d_model)
    noise[:, subject] = std * torch.randn(samples, len(subject), d_model, generator=gen)
    return noise


def noise_cases(
    adapter: ModelAdapter,
    prompt_set: Any,
    samples: int = 10,
    scale: float = 3.0,
    seed: int = 0,
    prepend_bos: bool | None = None,
) -> list[Case]:
    """One case per prompt with a subject; its noise is seeded by (seed, prompt id)."""
    if samples < 1 or scale <= 0:
        raise LensLabError(
            f"noise_samples={samples}, noise_scale={scale}",
            fix="use at least one noise sample and a positive noise scale",
        )
    prompts = encode_set(adapter.tokenizer, prompt_set, prepend_bos)
    with_subject = [p for p in prompts if p.subject_positions]
    if not with_subject:
        raise LensLabError(
            f"prompt set {_get(prompt_set, 'name')!r} has no prompt with a `subject`, so noise "
            "mode has nothing to corrupt",
            fix="give the prompts a `subject` (a substring of the text)",
        )
    std = scale * embedding_std(adapter)
    cases = []
    for p in with_subject:
        # Seeded by the prompt's id, so a prompt's noise does not depend on the others.
        prompt_seed = seed * 1_000_003 + zlib.crc32(p.id.encode())
        noise = subject_noise(
            len(p.input_ids), p.subject_positions, adapter.d_embed, std, samples, prompt_seed
        )
        cases.append(
            Case(
                id=p.id,
                corrupt="noise",
                mode="noise",
                clean_ids=p.input_ids,
                tokens=p.tokens,
                subject=p.subject_positions,
                clean_answer=_answer(p),
                noise=noise,
            )
        )
    return cases
