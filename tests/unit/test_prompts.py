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


DROP_SET = {
    "name": "s",
    "multi_token": "drop",
    "prompts": [
        {"id": "a", "text": "w1 w2", "answer": "w3"},
        {"id": "b", "text": "w1 w4", "answer": "w5 w6"},  # two tokens for this tokenizer
        {"id": "c", "text": "w1 w7", "answer": "w8"},
    ],
    "pairs": [{"clean": "a", "corrupt": "b"}, {"clean": "a", "corrupt": "c"}],
}


def test_drop_leaves_out_prompts_with_a_split_word_and_the_pairs_they_are_in():
    from lenslab.patching.corrupt import pair_cases
    from lenslab.prompts import encode_set, served_pairs

    kept = {p.id: p for p in encode_set(TOK, DROP_SET)}
    assert list(kept) == ["a", "c"]
    assert [(q["clean"], q["corrupt"]) for q in served_pairs(DROP_SET, kept)] == [("a", "c")]
    assert [(c.id, c.corrupt) for c in pair_cases(TOK, DROP_SET)] == [("a", "c")]
    assert len(encode_set(TOK, {**DROP_SET, "multi_token": "first"})) == 3
    only_split = {**DROP_SET, "prompts": DROP_SET["prompts"][1:2], "pairs": []}
    with pytest.raises(LensLabError, match="leaves none"):
        encode_set(TOK, only_split)


def test_dropped_prompts_and_first_token_words_are_noted_for_the_report():
    from lenslab.prompts import encode_set
    from lenslab.validate import note_tokens

    notes = {}
    kept = {p.id: p for p in encode_set(TOK, DROP_SET)}
    note_tokens(notes, "m", "s", DROP_SET, kept, TOK)
    assert notes == {
        "m": {"s": {"prompts left out (multi_token: drop)": {"b": {"w5 w6": ["w5", "w6"]}}}}
    }
    first = {**DROP_SET, "multi_token": "first"}
    notes = {}
    note_tokens(notes, "m", "s", first, {p.id: p for p in encode_set(TOK, first)}, TOK)
    assert notes == {"m": {"s": {"tracked by their first token": {"w5 w6": ["w5", "w6"]}}}}
