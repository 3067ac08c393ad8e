"""Tests of attention/tokens.py: column layout, word grouping, word lookup (no tokenizer needed),
and of base/word_lists.py, which splits the word lists of the nodes' inputs."""

from __future__ import annotations


import pytest

from comfyui_prompt_edit.attention.tokens import (
    EMBEDDING,
    END,
    PAD,
    START,
    Word,
    group_words,
    prompt_tokens_from_chunks,
)
from comfyui_prompt_edit.base.word_lists import split_word_list

from synthetic import CHUNK, EMB, END_ID, START_ID, VOCAB, make_prompt


def single(word: str) -> list[str]:
    return [word + "</w>"]


# --- layout and grouping ---------------------------------------------------------------------


def test_single_chunk_layout_and_words():
    p = make_prompt("a photo of a ted|dy bear")
    assert p.num_columns == CHUNK and p.num_chunks == 1 and p.chunk_length == CHUNK
    assert p.token_strings[:9] == (START, "a</w>", "photo</w>", "of</w>", "a</w>", "ted", "dy</w>", "bear</w>", END)
    assert set(p.token_strings[9:]) == {PAD}
    assert [w.text for w in p.words] == ["a", "photo", "of", "a", "teddy", "bear"]
    assert [w.columns for w in p.words] == [(1,), (2,), (3,), (4,), (5, 6), (7,)]
    assert p.is_special(0) and p.is_special(8) and p.is_special(76)
    assert not any(p.is_special(c) for c in range(1, 8))
    labels = p.token_labels()
    assert labels[:9] == [START, "a", "photo", "of", "a", "ted", "dy", "bear", END]


def test_three_token_word_and_punctuation_words():
    p = make_prompt([["hel", "lo", "kit", "ty</w>"], [",</w>"], ["cat</w>"]])
    assert [(w.text, w.columns) for w in p.words] == [("hellokitty", (1, 2, 3, 4)), (",", (5,)), ("cat", (6,))]


def test_empty_prompt_has_no_words():
    p = make_prompt([])
    assert p.words == ()
    assert p.token_strings[:2] == (START, END)
    assert set(p.token_strings[2:]) == {PAD}


def test_pad_id_equal_to_real_token_is_not_padding():
    """CLIP-G pads with id 0, which is also ``!``: a real ``!`` is content, later zeros are padding."""
    p = make_prompt([single("wow"), ["!</w>"], single("cat"), ["!</w>"]], pad_id=0)
    assert p.token_strings[:6] == (START, "wow</w>", "!</w>", "cat</w>", "!</w>", END)
    assert set(p.token_strings[6:]) == {PAD}
    assert [w.text for w in p.words] == ["wow", "!", "cat", "!"]
    assert not p.is_special(2) and not p.is_special(4)
    assert p.find(["!"]) == [(2,), (4,)]


def test_prompt_of_only_bang_with_zero_padding():
    p = make_prompt([["!</w>"]], pad_id=0)
    assert [(w.text, w.columns) for w in p.words] == [("!", (1,))]
    assert p.token_strings[2] == END and p.token_strings[3:] == (PAD,) * 74


def test_end_id_padding_clip_l_style():
    """SD1.x pads with the end id itself: only the first one is the end column."""
    p = make_prompt("a cat", pad_id=END_ID)
    assert p.token_strings[3] == END
    assert p.token_strings[4:] == (PAD,) * 73


def test_start_column_detected_by_position_not_id():
    vocab = {7: "x</w>", 8: "y</w>"}
    chunk = [8, 7, 2] + [0] * 74  # position 0 is the start whatever its id; end id is 2
    p = prompt_tokens_from_chunks("x", [chunk], vocab.__getitem__, 2)
    assert p.token_strings[:3] == (START, "x</w>", END)
    assert [(w.text, w.columns) for w in p.words] == [("x", (1,))]
    no_start = prompt_tokens_from_chunks("y x", [chunk], vocab.__getitem__, 2, has_start=False)
    assert no_start.token_strings[:3] == ("y</w>", "x</w>", END)
    assert [(w.text, w.columns) for w in no_start.words] == [("y", (0,)), ("x", (1,))]


def test_unequal_chunk_lengths_raise():
    with pytest.raises(ValueError, match="unequal"):
        prompt_tokens_from_chunks("", [[START_ID, END_ID], [START_ID, END_ID, END_ID]], VOCAB.string, END_ID)


def test_embedding_columns_are_their_own_words():
    p = make_prompt(f"a {EMB} photo")
    assert p.token_strings[:5] == (START, "a</w>", EMBEDDING, "photo</w>", END)
    assert [(w.text, w.columns) for w in p.words] == [("a", (1,)), (EMBEDDING, (2,)), ("photo", (3,))]
    assert not p.is_special(2)
    assert p.find([EMBEDDING]) == [(2,)]


def test_embedding_cuts_a_pending_word():
    words = group_words([START, "ted", EMBEDDING, "dy</w>", END])
    assert words == (Word("ted", (1,)), Word(EMBEDDING, (2,)), Word("dy", (3,)))


def test_group_words_keeps_unterminated_trailing_word():
    assert group_words(["ted", "dy"]) == (Word("teddy", (0, 1)),)
    assert group_words([START, END, PAD]) == ()


# --- long prompts ----------------------------------------------------------------------------


def test_hundred_words_span_two_chunks():
    words = [single(f"w{i}") for i in range(100)]
    p = make_prompt(words)
    assert p.num_columns == 154 and p.num_chunks == 2
    assert p.token_strings[0] == START and p.token_strings[76] == END
    assert p.token_strings[77] == START and p.token_strings[77 + 1 + 25] == END
    assert set(p.token_strings[77 + 2 + 25 :]) == {PAD}
    assert len(p.words) == 100
    for i, w in enumerate(p.words):
        assert w.text == f"w{i}"
        assert w.columns == ((1 + i,) if i < 75 else (77 + 1 + i - 75,))
    assert all(p.is_special(c) for c in (0, 76, 77, 103, 153))


def test_three_chunks():
    p = make_prompt([single(f"w{i}") for i in range(200)])
    assert p.num_columns == 231 and p.num_chunks == 3
    assert [p.token_strings[c] for c in (0, 76, 77, 153, 154)] == [START, END, START, END, START]
    assert p.words[-1] == Word("w199", (154 + 1 + 49,))


def test_word_split_at_chunk_boundary_gives_two_pieces():
    words = [single(f"w{i}") for i in range(74)] + [["ted", "dy</w>"], single("bear")]
    p = make_prompt(words, split="simple")
    assert p.num_columns == 154
    assert p.token_strings[75:79] == ("ted", END, START, "dy</w>")
    texts = [w.text for w in p.words]
    assert texts[-3:] == ["ted", "dy", "bear"]
    assert p.words[-3].columns == (75,) and p.words[-2].columns == (78,) and p.words[-1].columns == (79,)
    # The same words laid out word by word keep "teddy" whole, in the second chunk.
    q = make_prompt(words, split="word")
    assert [(w.text, w.columns) for w in q.words[-2:]] == [("teddy", (78, 79)), ("bear", (80,))]
    assert q.token_strings[75:78] == (END, PAD, START)


def test_empty_padding_chunks_have_no_words():
    p = make_prompt("a cat", num_chunks=3)
    assert p.num_columns == 231
    assert [w.text for w in p.words] == ["a", "cat"]
    assert [p.token_strings[c] for c in (77, 78, 154, 155)] == [START, END, START, END]


# --- find --------------------------------------------------------------------------------------


def test_find_single_word_all_occurrences():
    p = make_prompt("a cat and a dog and a cat")
    assert p.find(["cat"]) == [(2,), (8,)]
    assert p.find(["a"]) == [(1,), (4,), (7,)]
    assert p.find(["dog"]) == [(5,)]
    assert p.find(["bird"]) == []


def test_find_multi_token_and_multi_word():
    p = make_prompt("a ted|dy bear and a ted|dy bear on a ted|dy")
    assert p.find(["teddy"]) == [(2, 3), (7, 8), (12, 13)]
    assert p.find(["teddy", "bear"]) == [(2, 3, 4), (7, 8, 9)]
    assert p.find(["a", "teddy", "bear"]) == [(1, 2, 3, 4), (6, 7, 8, 9)]
    assert p.find(["bear", "teddy"]) == []
    assert p.find(["ted"]) == []  # a sub-token is not a word
    assert p.find(["bear", "and", "a"]) == [(4, 5, 6)]


def test_find_empty_query_and_query_longer_than_prompt():
    p = make_prompt("a cat")
    assert p.find([]) == []
    assert p.find(["a", "cat", "and"]) == []
    assert p.find(("a", "cat")) == [(1, 2)]


def test_find_across_chunk_boundary_and_in_second_chunk():
    p = make_prompt([single(f"w{i}") for i in range(80)])
    assert p.find(["w74", "w75"]) == [(75, 78)]
    assert p.find(["w79"]) == [(82,)]
    split = make_prompt([single(f"w{i}") for i in range(74)] + [["ted", "dy</w>"]], split="simple")
    assert split.find(["teddy"]) == []  # cut by the boundary, it is two CLIP words
    assert split.find(["ted", "dy"]) == [(75, 78)]


# --- split_word_list -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("cat", ["cat"]),
        ("cat, teddy bear", ["cat", "teddy bear"]),
        ("cat\nteddy bear\n", ["cat", "teddy bear"]),
        (" cat ,, \n , dog  ", ["cat", "dog"]),
        ("", []),
        (" , \n ", []),
        ("red car,\nblue  truck", ["red car", "blue  truck"]),
    ],
)
def test_split_word_list(spec, expected):
    assert split_word_list(spec) == expected
