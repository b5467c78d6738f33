"""The synthetic world of the embedded model: real countries, their facts, and the templates.

Everything here is plain data plus small helpers, so prompt sets, tests and other methods can
build inputs in the vocabulary of the embedded model without training it.

Templates are written with spaces around punctuation ("The capital of {country} is {capital} .")
so that ``str.split()`` is the tokenization; the word-level tokenizer gives the same tokens for
the natural spelling ("The capital of France is Paris.").

Conventions:

* every template puts its answer (the object) last, before the final "." if any, so a cloze
  prompt is the template cut just before the object;
* every entity and answer is one token (one word);
* the *held-out* slot words (``HELDOUT_SLOT_WORDS``, "plasma" among them) are in the tokenizer's
  vocabulary but appear nowhere in the training corpus: copying them is a true copy test.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    language: str
    currency: str
    continent: str


# Each language belongs to exactly one country here (two-hop facts go language -> country).
COUNTRIES: tuple[Country, ...] = (
    Country("France", "Paris", "French", "euro", "Europe"),
    Country("Germany", "Berlin", "German", "euro", "Europe"),
    Country("Japan", "Tokyo", "Japanese", "yen", "Asia"),
    Country("Italy", "Rome", "Italian", "euro", "Europe"),
    Country("Spain", "Madrid", "Spanish", "euro", "Europe"),
    Country("Egypt", "Cairo", "Arabic", "pound", "Africa"),
    Country("China", "Beijing", "Chinese", "yuan", "Asia"),
    Country("Russia", "Moscow", "Russian", "ruble", "Europe"),
    Country("Greece", "Athens", "Greek", "euro", "Europe"),
    Country("Kenya", "Nairobi", "Swahili", "shilling", "Africa"),
    Country("Turkey", "Ankara", "Turkish", "lira", "Asia"),
    Country("Poland", "Warsaw", "Polish", "zloty", "Europe"),
    Country("Korea", "Seoul", "Korean", "won", "Asia"),
    Country("Sweden", "Stockholm", "Swedish", "krona", "Europe"),
    Country("Portugal", "Lisbon", "Portuguese", "euro", "Europe"),
    Country("Thailand", "Bangkok", "Thai", "baht", "Asia"),
    Country("Norway", "Oslo", "Norwegian", "krone", "Europe"),
    Country("Vietnam", "Hanoi", "Vietnamese", "dong", "Asia"),
    Country("Finland", "Helsinki", "Finnish", "euro", "Europe"),
    Country("Iran", "Tehran", "Persian", "rial", "Asia"),
    Country("Denmark", "Copenhagen", "Danish", "krone", "Europe"),
    Country("Indonesia", "Jakarta", "Indonesian", "rupiah", "Asia"),
    Country("Hungary", "Budapest", "Hungarian", "forint", "Europe"),
    Country("Madagascar", "Antananarivo", "Malagasy", "ariary", "Africa"),
    Country("Ukraine", "Kyiv", "Ukrainian", "hryvnia", "Europe"),
    Country("Pakistan", "Islamabad", "Urdu", "rupee", "Asia"),
    Country("Czechia", "Prague", "Czech", "koruna", "Europe"),
    Country("Somalia", "Mogadishu", "Somali", "shilling", "Africa"),
    Country("Romania", "Bucharest", "Romanian", "leu", "Europe"),
    Country("Bangladesh", "Dhaka", "Bengali", "taka", "Asia"),
    Country("Bulgaria", "Sofia", "Bulgarian", "lev", "Europe"),
    Country("Georgia", "Tbilisi", "Georgian", "lari", "Asia"),
    Country("Serbia", "Belgrade", "Serbian", "dinar", "Europe"),
    Country("Rwanda", "Kigali", "Kinyarwanda", "franc", "Africa"),
    Country("Croatia", "Zagreb", "Croatian", "euro", "Europe"),
    Country("Armenia", "Yerevan", "Armenian", "dram", "Asia"),
    Country("Iceland", "Reykjavik", "Icelandic", "krona", "Europe"),
    Country("Nepal", "Kathmandu", "Nepali", "rupee", "Asia"),
    Country("Albania", "Tirana", "Albanian", "lek", "Europe"),
    Country("Mongolia", "Ulaanbaatar", "Mongolian", "tugrik", "Asia"),
)

# ---------------------------------------------------------------------------------------------
# One-hop relations. Each template's slots are Country fields; the last slot is the answer.
# The first template of a relation is its canonical cloze form.
RELATIONS: dict[str, tuple[str, ...]] = {
    "capital": (
        "The capital of {name} is {capital} .",
        "The capital city of {name} is {capital} .",
        "The government of {name} sits in {capital} .",
    ),
    "language": (
        "People in {name} speak {language} .",
        "The official language of {name} is {language} .",
        "In {name} , most people speak {language} .",
    ),
    "currency": (
        "The currency of {name} is the {currency} .",
        "In {name} , people pay with the {currency} .",
    ),
    "continent": (
        "{name} is a country in {continent} .",
        "{name} is located in {continent} .",
    ),
    "capital_country": (
        "{capital} is the capital of {name} .",
        "{capital} is a city in {name} .",
    ),
    "language_country": (
        "{language} is the language of {name} .",
        "{language} is spoken in {name} .",
    ),
}

# Two-hop facts: the bridge entity (the country) is never named.
TWO_HOP: dict[str, tuple[str, ...]] = {
    "language_capital": (
        "The capital of the country where people speak {language} is {capital} .",
    ),
    "capital_currency": (
        "The currency of the country whose capital is {capital} is the {currency} .",
    ),
    "capital_language": ("People in the country whose capital is {capital} speak {language} .",),
    "language_continent": ("The country where people speak {language} is in {continent} .",),
}

# Patchscopes-style entity descriptions ("Paris : capital of France").
DESCRIPTIONS: dict[str, str] = {
    "capital": "{capital} : capital of {name}",
    "country": "{name} : country in {continent}",
    "language": "{language} : language of {name}",
}

# Tables: a header names the relation, then "country attribute" pairs. The token after a country
# is its attribute, so the country's own position learns to hold its attributes.
TABLE_HEADERS: dict[str, str] = {
    "capital": "Capitals :",
    "language": "Languages :",
    "currency": "Currencies :",
    "continent": "Continents :",
}

# Few-shot relation prompts for the attribute lens use these canonical forms.
FEWSHOT: dict[str, str] = {
    "capital": "The capital city of {name} is {capital} .",
    "language": "The official language of {name} is {language} .",
    "currency": "The currency of {name} is the {currency} .",
    "continent": "{name} is located in {continent} .",
}

# ---------------------------------------------------------------------------------------------
# Copying a rare word after repetition (the "plasma" prompt).
COPY_TEMPLATES: tuple[str, ...] = (
    "Sometimes , when people say {w} , they mean {d1} . Other times , when people say {w} , "
    "they mean {d2} .",
    "The word {w} is rare , but I say {w} again .",
)
# Repeated word lists: dense practice for induction (copy the word that followed last time).
REPEAT_TEMPLATE = "The list is {ws} . Once more , the list is {ws} ."
# The plasma prompt of the default study, in this world's spelling.
PLASMA_PROMPT = (
    "Sometimes, when people say plasma, they mean a state of matter. "
    "Other times, when people say plasma"
)

SLOT_DESCRIPTIONS: tuple[str, ...] = (
    "a state of matter",
    "a kind of animal",
    "a type of music",
    "a part of the body",
    "a unit of measure",
    "a kind of weather",
    "a piece of furniture",
    "a type of food",
    "a kind of tool",
    "a sort of game",
    "a form of art",
    "a branch of science",
    "a piece of clothing",
    "a kind of plant",
    "a type of boat",
    "a kind of dance",
    "a unit of time",
    "a kind of rock",
    "a kind of bird",
    "a way of cooking",
    "a sort of machine",
    "a kind of drink",
    "a type of cloud",
    "a shape in geometry",
    "a place to sleep",
    "a kind of fabric",
    "a type of building",
    "a sort of medicine",
    "a kind of light",
    "a part of a ship",
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Slot words seen in training (the model learns to copy them) ...
SEEN_SLOT_WORDS: tuple[str, ...] = _words(
    """
    anchor arrow badge bamboo banjo barrel basket beacon blanket blossom bonnet bottle bracelet
    bridge bucket buckle button cabin cactus candle canvas carpet castle cellar chalk channel
    chimney cinder circus cliff clover cobalt comet copper coral cradle crystal curtain cushion
    dagger desert diamond dragon drum eagle ember engine falcon feather fiddle flag flute forest
    fossil fountain garden garlic ginger glove goblet granite harbor harp helmet hammer honey
    hornet iris island ivory jacket jasmine jewel kettle kite ladder lantern lemon lizard locket
    magnet mantle marble meadow mirror mitten mosaic needle nickel oak orchard otter oyster
    paddle palace parrot pebble pepper pillow pirate planet pocket pottery puzzle quartz quill
    rabbit radish ribbon rocket saddle salmon satin scarf shadow shovel silver sparrow spider
    spindle sponge statue steeple stirrup summit tablet teapot temple thimble thunder timber
    tobacco torch tower trumpet tulip tunnel turtle velvet violin walnut whistle willow window
    wizard yarn zebra zipper
    """
)
# ... and slot words that never appear in training; "plasma" is the seed prompt's word.
HELDOUT_SLOT_WORDS: tuple[str, ...] = _words(
    """
    plasma quasar nebula glacier tundra lagoon prism sonnet walrus gazebo turbine mango falafel
    tornado volcano kimono penguin saffron hamster trombone igloo lasso origami pendulum
    sapphire tuxedo yodel zeppelin avocado bagpipe chandelier dynamo accordion harpoon
    kaleidoscope labyrinth monsoon obelisk periscope hologram
    """
)

# ---------------------------------------------------------------------------------------------
# Language B ("Zorbian"): made-up words for everyday concepts, with translation templates.
TRANSLATIONS: tuple[tuple[str, str], ...] = (
    ("water", "vash"),
    ("fire", "pyra"),
    ("house", "domek"),
    ("dog", "hundo"),
    ("cat", "mishka"),
    ("tree", "arbo"),
    ("sun", "solka"),
    ("moon", "lunek"),
    ("bread", "panto"),
    ("milk", "lakto"),
    ("stone", "petrak"),
    ("river", "flumo"),
    ("mountain", "montu"),
    ("bird", "avika"),
    ("fish", "pesko"),
    ("book", "libru"),
    ("road", "vialo"),
    ("door", "portu"),
    ("hand", "manu"),
    ("eye", "okulo"),
    ("flower", "florin"),
    ("apple", "pomak"),
    ("salt", "salko"),
    ("snow", "nivo"),
    ("rain", "pluvek"),
    ("wind", "ventik"),
    ("night", "noktu"),
    ("day", "dieno"),
    ("friend", "amiko"),
    ("child", "kindo"),
    ("king", "regno"),
    ("horse", "kavalo"),
    ("ship", "navik"),
    ("gold", "aurek"),
    ("heart", "kordo"),
    ("song", "kantu"),
)
TRANSLATION_TEMPLATES: dict[str, str] = {
    "en_b": 'English : " {en} " - Zorbian : " {b} "',
    "b_en": 'Zorbian : " {b} " - English : " {en} "',
    "word_for": "The Zorbian word for {en} is {b} .",
}
# The canonical translation prompt (English -> Zorbian), natural spelling, answer left out.

# Mention sentences that use the English concept words outside of translation.
CONCEPT_TEMPLATES: tuple[str, ...] = (
    "I can see the {en} from here .",
    "She talks about the {en} every day .",
)


# ---------------------------------------------------------------------------------------------
# Helpers


def fill(template: str, country: Country | None = None, **slots: str) -> str:
    """Fill a template from a country's fields plus explicit slots."""
    values = dict(country.__dict__) if country is not None else {}
    values.update(slots)
    return template.format(**values)


def cloze(template: str, country: Country | None = None, **slots: str) -> tuple[str, str]:
    """(prompt, answer): the filled template cut just before its last slot."""
    last = template.rstrip(" .").rsplit("{", 1)
    prefix, slot = last[0].rstrip(), last[1].split("}", 1)[0]
    values = dict(country.__dict__) if country is not None else {}
    values.update(slots)
    return prefix.format(**values), values[slot]


def natural(text: str) -> str:
    """The natural spelling of spaced template text: "Paris ." -> "Paris.", ', x' -> ', x'."""
    for p in (" .", " ,", " :", " ?", " !"):
        text = text.replace(p, p[1:])
    return text


def countries(n: int | None = None) -> tuple[Country, ...]:
    """The first ``n`` countries (all by default); France and Germany always come first."""
    return COUNTRIES if n is None else COUNTRIES[:n]


def two_hop_heldout(n_countries: int, n_heldout: int, seed: int) -> tuple[str, ...]:
    """Countries whose two-hop facts are kept out of training (never France or Germany)."""
    pool = [c.name for c in countries(n_countries)[2:]]
    rng = random.Random(f"two-hop-heldout:{seed}")
    return tuple(sorted(rng.sample(pool, min(n_heldout, len(pool)))))


def all_texts() -> Iterable[str]:
    """Every string the world can produce words from (for building the vocabulary)."""
    for c in COUNTRIES:
        yield " ".join(c.__dict__.values())
    for group in (RELATIONS, TWO_HOP):
        for templates in group.values():
            yield from templates
    yield from DESCRIPTIONS.values()
    yield from TABLE_HEADERS.values()
    yield from FEWSHOT.values()
    yield from COPY_TEMPLATES
    yield REPEAT_TEMPLATE
    yield from SLOT_DESCRIPTIONS
    yield " ".join(SEEN_SLOT_WORDS)
    yield " ".join(HELDOUT_SLOT_WORDS)
    for en, b in TRANSLATIONS:
        yield f"{en} {b}"
    yield from TRANSLATION_TEMPLATES.values()
    yield from CONCEPT_TEMPLATES
    yield "English Zorbian"


def _check_world() -> None:
    """Invariants the rest of lenslab relies on; fails at import when the data is edited badly."""
    langs = [c.language for c in COUNTRIES]
    assert len(set(langs)) == len(langs), "each language must belong to one country"
    names = [c.name for c in COUNTRIES] + [c.capital for c in COUNTRIES]
    assert len(set(names)) == len(names)
    assert COUNTRIES[0].name == "France" and COUNTRIES[1].name == "Germany"
    assert "plasma" in HELDOUT_SLOT_WORDS and "a state of matter" in SLOT_DESCRIPTIONS
    held = set(HELDOUT_SLOT_WORDS)
    assert not held & set(SEEN_SLOT_WORDS)
    others = [t for t in all_texts() if t != " ".join(HELDOUT_SLOT_WORDS)]
    used = {w for t in others for w in t.replace("{", " ").replace("}", " ").split()}
    clash = sorted(held & used)
    assert not clash, f"held-out slot words used elsewhere in the world: {clash}"
    zb = [b for _, b in TRANSLATIONS]
    assert len(set(zb)) == len(zb)


_check_world()
