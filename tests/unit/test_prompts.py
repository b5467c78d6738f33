"""Tokenisation, single-token words, subject spans and pair alignment."""

import pytest

from lenslab.errors import LensLabError
from lenslab.models.tiny import tiny_tokenizer
from lenslab.prompts import align_pair, encode_prompt, word_id

TOK = tiny_tokenizer()


def test_word_id_is_the_leading_space_token():
    assert word_id(TOK, "w5") == 9
    assert word_id(TOK, " w5 ") == 9


def test_multi_token_target_is_a_clear_error_when_the_set_says_so():
    with pytest.raises(LensLabError, match=r"'w5 w6' is 2 tokens"):
        word_id(TOK, "w5 w6", "error")
    assert word_id(TOK, "w5 w6") == word_id(TOK, "w5")  # default: the first token


def test_subject_positions_and_answer():
    p = encode_prompt(TOK, {"id": "a", "text": "w1 w2 w3 w4", "subject": "w2 w3", "answer": "w9"})
    assert p.input_ids == [5, 6, 7, 8]
    assert p.subject_positions == [1, 2]
    assert p.answer_id == 13


def test_subject_with_prepended_bos_shifts():
    p = encode_prompt(TOK, {"id": "a", "text": "w1 w2 w3", "subject": "w3"}, prepend_bos=True)
    assert p.input_ids[0] == TOK.bos_token_id
    assert p.subject_positions == [3]


def test_missing_subject_is_an_error():
    with pytest.raises(LensLabError, match="subject 'w7' does not occur"):
        encode_prompt(TOK, {"id": "a", "text": "w1 w2", "subject": "w7"})


def test_alignment_rules():
    a = encode_prompt(TOK, {"id": "a", "text": "w1 w2 w3"})
    b = encode_prompt(TOK, {"id": "b", "text": "w4 w1 w2 w3"})
    with pytest.raises(LensLabError, match=r"do not align.*align: left"):
        align_pair(a, b, "strict")
    assert align_pair(a, b, "left") == [(0, 0), (1, 1), (2, 2)]
    assert align_pair(a, b, "right") == [(0, 1), (1, 2), (2, 3)]
    assert align_pair(a, a, "strict") == [(0, 0), (1, 1), (2, 2)]
