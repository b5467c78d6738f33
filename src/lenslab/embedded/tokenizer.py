"""A word-level tokenizer over the world's vocabulary, built locally with HF ``tokenizers``.

Every word of the world is one token; punctuation characters are tokens of their own; spaces
carry no information, so ``" Paris"`` and ``"Paris"`` are the same single token. Decoding joins
words with spaces and glues punctuation back ("The capital of France is Paris.").
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lenslab.embedded import world

EOS = "<|endoftext|>"
UNK = "<unk>"
PAD = "<pad>"
SPECIALS = (EOS, UNK, PAD)  # ids 0, 1, 2


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )


def vocabulary() -> list[str]:
    """Specials, then every word of the world in sorted order (stable ids)."""
    pre = pre_tokenizer()
    words = set()
    for text in world.all_texts():
        text = re.sub(r"\{\w+\}", " ", text)  # template slots are not words
        words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    return [*SPECIALS, *sorted(words)]


def build_tokenizer(max_length: int = 1024) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )
    return fast
