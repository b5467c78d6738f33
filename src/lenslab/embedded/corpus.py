"""Training corpus, evaluation items and held-out text of the embedded world.

The corpus is a deterministic stream of *documents* (a paragraph of facts, a two-hop fact, a
copy sentence, a list of entity descriptions, a few-shot relation prompt, a translation...)
drawn from a seeded ``random.Random``. Documents are packed into training windows of
``seq_len`` tokens: every window starts at a document start, documents are separated by
``<|endoftext|>``, and the tail of a window that no further document fits into is padding
(ignored by the loss). Prompts without a BOS token therefore look like training text.

What never enters training:

* the held-out slot words (``world.HELDOUT_SLOT_WORDS``, "plasma" among them);
* the two-hop facts of ``world.two_hop_heldout(...)`` countries;
* fact paragraphs of two or more sentences whose hash is "held out" (``is_heldout_paragraph``):
  :func:`heldout_text` draws from exactly those, so it is world text the model never saw,
  although every single fact in it was trained.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from lenslab.embedded import world
from lenslab.embedded.settings import EmbeddedSettings, parse_settings, stage_plan
from lenslab.embedded.world import Country

Item = tuple[str, str]  # (prompt in spaced template form, one-word answer)


def is_heldout_paragraph(text: str) -> bool:
    """About 1 in 16 multi-sentence paragraphs is reserved for held-out text."""
    return hashlib.sha256(text.encode()).digest()[0] % 16 == 0


class World:
    """The world as sized by the settings, with document generators."""

    def __init__(self, settings: EmbeddedSettings):
        self.s = settings
        self.countries: tuple[Country, ...] = world.countries(settings.n_countries)
        held = set(
            world.two_hop_heldout(settings.n_countries, settings.n_two_hop_heldout, settings.seed)
        )
        self.two_hop_out = tuple(c for c in self.countries if c.name in held)
        self.two_hop_in = tuple(c for c in self.countries if c.name not in held)

    # -- documents -----------------------------------------------------------------------
    def paragraph(self, rng: random.Random, n: int, country: Country | None = None) -> str:
        c = country or rng.choice(self.countries)
        rels = rng.sample(sorted(world.RELATIONS), min(n, len(world.RELATIONS)))
        return " ".join(world.fill(rng.choice(world.RELATIONS[r]), c) for r in rels)

    def facts(self, rng: random.Random) -> str:
        while True:
            n = rng.randint(1, self.s.max_paragraph)
            text = self.paragraph(rng, n)
            if n == 1 or not is_heldout_paragraph(text):
                return text

    def two_hop(self, rng: random.Random) -> str:
        kind = rng.choice(sorted(world.TWO_HOP))
        return world.fill(rng.choice(world.TWO_HOP[kind]), rng.choice(self.two_hop_in))

    def copy(self, rng: random.Random, words: tuple[str, ...] = world.SEEN_SLOT_WORDS) -> str:
        w = rng.choice(words)
        d1, d2 = rng.sample(world.SLOT_DESCRIPTIONS, 2)
        template = world.COPY_TEMPLATES[0] if rng.random() < 0.8 else world.COPY_TEMPLATES[1]
        return template.format(w=w, d1=d1, d2=d2)

    def repeat(self, rng: random.Random, words: tuple[str, ...] = world.SEEN_SLOT_WORDS) -> str:
        ws = " ".join(rng.sample(words, rng.randint(2, 5)))
        return world.REPEAT_TEMPLATE.format(ws=ws)

    def descriptions(self, rng: random.Random) -> str:
        n = rng.randint(1, 4)
        entries = [
            world.fill(world.DESCRIPTIONS[rng.choice(sorted(world.DESCRIPTIONS))], c)
            for c in rng.sample(self.countries, n)
        ]
        return " , ".join(entries) + " ."

    def tables(self, rng: random.Random) -> str:
        relation = rng.choice(sorted(world.TABLE_HEADERS))
        rows = [
            f"{c.name} {getattr(c, relation)}"
            for c in rng.sample(self.countries, rng.randint(2, 5))
        ]
        return world.TABLE_HEADERS[relation] + " " + " , ".join(rows) + " ."

    def fewshot(self, rng: random.Random) -> str:
        template = world.FEWSHOT[rng.choice(sorted(world.FEWSHOT))]
        n = rng.randint(2, 4)
        return " ".join(world.fill(template, c) for c in rng.sample(self.countries, n))

    def translation(self, rng: random.Random) -> str:
        kind = rng.choice(("en_b", "b_en", "word_for", "fewshot", "fewshot"))
        if kind == "fewshot":
            pairs = rng.sample(world.TRANSLATIONS, rng.randint(2, 4))
            t = world.TRANSLATION_TEMPLATES["en_b"]
            return " ".join(t.format(en=en, b=b) for en, b in pairs)
        en, b = rng.choice(world.TRANSLATIONS)
        return world.TRANSLATION_TEMPLATES[kind].format(en=en, b=b)

    def concepts(self, rng: random.Random) -> str:
        en, _ = rng.choice(world.TRANSLATIONS)
        return rng.choice(world.CONCEPT_TEMPLATES).format(en=en)

    def document(self, rng: random.Random) -> str:
        kinds = sorted(self.s.mix)
        kind = rng.choices(kinds, weights=[self.s.mix[k] for k in kinds])[0]
        return getattr(self, kind)(rng)

    # -- evaluation ------------------------------------------------------------------------
    def eval_items(self) -> dict[str, list[Item]]:
        """Cloze items per skill; all prompts are in spaced template form."""
        s = self.s
        items: dict[str, list[Item]] = {}
        items["facts"] = [
            world.cloze(t, c) for c in self.countries for ts in world.RELATIONS.values() for t in ts
        ]
        items["two_hop"] = [
            world.cloze(t, c) for c in self.two_hop_in for ts in world.TWO_HOP.values() for t in ts
        ]
        items["two_hop_heldout"] = [
            world.cloze(t, c) for c in self.two_hop_out for ts in world.TWO_HOP.values() for t in ts
        ]
        items["descriptions"] = [
            world.cloze(t, c) for c in self.countries for t in world.DESCRIPTIONS.values()
        ]
        rng = random.Random(f"eval-fewshot:{s.seed}")
        items["fewshot"] = []
        for key in sorted(world.FEWSHOT):
            t = world.FEWSHOT[key]
            for c in self.countries:
                demos = rng.sample([d for d in self.countries if d is not c], 2)
                prompt, answer = world.cloze(t, c)
                items["fewshot"].append(
                    (" ".join(world.fill(t, d) for d in demos) + " " + prompt, answer)
                )
        items["translation"] = [
            (f'English : " {en} " - Zorbian : "', b) for en, b in world.TRANSLATIONS
        ] + [(f'Zorbian : " {b} " - English : "', en) for en, b in world.TRANSLATIONS]
        for name, words in (
            ("copy_heldout", world.HELDOUT_SLOT_WORDS),
            ("copy_seen", world.SEEN_SLOT_WORDS),
        ):
            rng = random.Random(f"eval-{name}:{s.seed}")
            items[name] = []
            for i in range(s.eval_copy_items):
                w = words[i % len(words)]
                d1 = rng.choice(world.SLOT_DESCRIPTIONS)
                prompt = f"Sometimes , when people say {w} , they mean {d1} . Other times , when people say"
                items[name].append((prompt, w))
        return items


def training_windows(
    settings: EmbeddedSettings, vocab: Mapping[str, int], n_windows: int, eos: int, pad: int
) -> torch.Tensor:
    """[n_windows, seq_len] int64 token ids of the training stream (pad = ``pad``)."""
    s = settings
    w = World(s)
    rng = random.Random(f"corpus:{s.seed}")
    out = torch.full((n_windows, s.seq_len), pad, dtype=torch.int64)
    for i in range(n_windows):
        ids: list[int] = []
        misses = 0
        while misses < 3:
            doc = [vocab[t] for t in w.document(rng).split()] + [eos]
            if len(ids) + len(doc) <= s.seq_len:
                ids += doc
            else:
                misses += 1
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def training_stream(
    settings: EmbeddedSettings, vocab: Mapping[str, int], eos: int, pad: int
) -> torch.Tensor:
    """All ``steps * batch_size`` training windows in step order: the shallow stage's windows
    (drawn from ``stage1_mix``) first, then windows of the full ``mix``."""
    s = settings
    plan = stage_plan(s)
    total = s.steps * s.batch_size
    if len(plan) == 1 or not s.stage1_mix:
        return training_windows(s, vocab, total, eos=eos, pad=pad)
    n1 = plan[0][2] * s.batch_size
    first = training_windows(replace(s, mix=s.stage1_mix), vocab, n1, eos=eos, pad=pad)
    return torch.cat([first, training_windows(s, vocab, total - n1, eos=eos, pad=pad)])


def heldout_text(settings: Mapping[str, Any] | EmbeddedSettings, n_lines: int) -> list[str]:
    """``n_lines`` lines of world text that are not in the training corpus (natural spelling).

    Four in five lines are fact paragraphs of 2..max_paragraph sentences reserved by
    ``is_heldout_paragraph`` (every fact in them was trained, the paragraph never was); one in
    five is a copy sentence with a held-out slot word. Deterministic for given settings.
    """
    s = settings if isinstance(settings, EmbeddedSettings) else parse_settings(settings)
    w = World(s)
    rng = random.Random(f"heldout:{s.seed}")
    lines: list[str] = []
    for _ in range(1000 * (n_lines + 1)):
        if len(lines) >= n_lines:
            return lines
        if len(lines) % 5 == 4:
            lines.append(world.natural(w.copy(rng, world.HELDOUT_SLOT_WORDS)))
            continue
        text = w.paragraph(rng, rng.randint(2, max(2, s.max_paragraph)))
        if is_heldout_paragraph(text) and world.natural(text) not in lines:
            lines.append(world.natural(text))
    raise ValueError(
        f"the world of these settings has fewer than {n_lines} distinct held-out lines; "
        "ask for fewer lines or use more countries / a larger max_paragraph"
    )
