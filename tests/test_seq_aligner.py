"""Tests of attention/seq_aligner.py: word-swap mapper and refinement (Needleman–Wunsch) alignment.

Prompts are synthetic (no tokenizer): every word is a list of fake BPE sub-token strings, laid out
in 77-token chunks exactly as a CLIP tokenizer would.
"""

from __future__ import annotations

from typing import Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyui_prompt_edit.attention.seq_aligner import (
    AlignmentError,
    global_align,
    index_to_matrix,
    refinement_alignment,
    replacement_mapper,
)
from comfyui_prompt_edit.attention.tokens import END, PAD, START

from synthetic import CHUNK, CONTENT, make_pair, make_prompt


def word(name: str, n_tokens: int = 1) -> tuple[str, ...]:
    """A CLIP word of ``n_tokens`` sub-tokens whose text is unique to ``name``."""
    return tuple(f"{name}~{i}" for i in range(n_tokens - 1)) + (f"{name}</w>",)


def lcs_length(x: Sequence[str], y: Sequence[str]) -> int:
    """Independent textbook LCS length (pure Python)."""
    prev = [0] * (len(y) + 1)
    for a in x:
        cur = [0]
        for j, b in enumerate(y):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


# Source words (some multi-token, few of them so prompts repeat words) and fresh words that never
# occur in a source prompt (so a swap or insertion is unambiguous).
SOURCE_WORDS = [word("a"), word("cat"), word("ted", 2), word("on"), word("mat", 3), word("big", 2)]
FRESH_WORDS = [word(f"N{k}", n) for k, n in enumerate([1, 2, 3, 1, 2, 3, 4])]

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def swaps(draw, min_words=1, max_words=12):
    """(source words, target words, swapped positions): target = source with some words replaced
    by fresh words (of any token length), at least one word kept."""
    src = draw(st.lists(st.sampled_from(SOURCE_WORDS), min_size=min_words, max_size=max_words))
    positions = draw(st.sets(st.integers(0, len(src) - 1), max_size=len(src) - 1))
    tgt = list(src)
    for p in positions:
        tgt[p] = draw(st.sampled_from(FRESH_WORDS))
    return src, tgt, sorted(positions)


@st.composite
def insertions(draw, min_words=1, max_words=12, max_insert=6):
    """(source words, target words, inserted target word positions): fresh words inserted."""
    src = draw(st.lists(st.sampled_from(SOURCE_WORDS), min_size=min_words, max_size=max_words))
    tgt = list(src)
    for _ in range(draw(st.integers(1, max_insert))):
        tgt.insert(draw(st.integers(0, len(tgt))), draw(st.sampled_from(FRESH_WORDS)))
    inserted = [k for k, w in enumerate(tgt) if w in FRESH_WORDS]
    return src, tgt, inserted


def tail_columns(prompt, chunk: int) -> list[int]:
    cols = range(chunk * CHUNK, (chunk + 1) * CHUNK)
    return [c for c in cols if prompt.token_strings[c] in (END, PAD)]


# --- replacement mapper: properties ------------------------------------------------------------


def check_swap_mapper(source, target, positions):
    mapper = replacement_mapper(source, target)
    n = source.num_columns
    assert mapper.shape == (n, n) and mapper.dtype == torch.float32
    assert len(source.words) == len(target.words)
    content_s = [c for c in range(n) if not source.is_special(c)]
    content_t = [c for c in range(n) if not target.is_special(c)]
    special_t = [c for c in range(n) if target.is_special(c)]
    # Each source content token hands on all of its attention (rows sum to 1, as P2P's 1/b weights),
    # and every special target column takes exactly one source column.
    torch.testing.assert_close(mapper[content_s].sum(1), torch.ones(len(content_s)))
    torch.testing.assert_close(mapper[:, special_t].sum(0), torch.ones(len(special_t)))
    # Target content columns: 1 for kept words and same-length swaps, a/b inside an a→b token word.
    col_sums = torch.ones(n)

    expected = torch.zeros(n, n)
    for k, (sw, tw) in enumerate(zip(source.words, target.words)):
        if k not in positions:  # unchanged word: 1:1, shifted by the swaps before it
            assert sw.text == tw.text and len(sw.columns) == len(tw.columns)
            for i, j in zip(sw.columns, tw.columns):
                expected[i, j] = 1.0
    for k in positions:  # swapped word: paired with the target word at its place, as P2P does
        src, tgt = list(source.words[k].columns), list(target.words[k].columns)
        col_sums[tgt] = 1.0 if len(src) == len(tgt) else len(src) / len(tgt)
        if len(src) == len(tgt):
            for i, j in zip(src, tgt):
                expected[i, j] = 1.0
        else:
            for i in src:
                for j in tgt:
                    expected[i, j] = 1.0 / len(tgt)
    torch.testing.assert_close(mapper[content_s][:, content_t], expected[content_s][:, content_t])
    torch.testing.assert_close(mapper[:, content_t].sum(0), col_sums[content_t])

    # Special columns only feed special columns of the same chunk, of the same kind, in order.
    special_s = [c for c in range(n) if source.is_special(c)]
    assert not mapper[content_s][:, special_t].any()
    assert not mapper[special_s][:, content_t].any()
    for c in range(source.num_chunks):
        s0, t0 = c * CHUNK, c * CHUNK
        assert source.token_strings[s0] == START and target.token_strings[t0] == START
        assert mapper[s0, t0] == 1.0
        s_tail, t_tail = tail_columns(source, c), tail_columns(target, c)
        assert source.token_strings[s_tail[0]] == END and target.token_strings[t_tail[0]] == END
        assert mapper[s_tail[0], t_tail[0]] == 1.0  # end ← end
        previous = s_tail[0]
        for k, j in enumerate(t_tail[1:], 1):  # pad ← pad (the source's last one once they run out)
            (rows,) = torch.nonzero(mapper[:, j], as_tuple=True)
            assert rows.tolist() == [s_tail[min(k, len(s_tail) - 1)]]
            i = rows.item()
            assert i in s_tail and i >= previous and mapper[i, j] == 1.0
            assert source.token_strings[i] == (PAD if len(s_tail) > 1 else END)
            previous = i
    return mapper


@FAST
@given(swaps())
def test_replacement_random_swaps(case):
    src_words, tgt_words, positions = case
    source, target = make_pair(src_words, tgt_words)
    check_swap_mapper(source, target, positions)


@FAST
@given(st.lists(st.sampled_from(SOURCE_WORDS + FRESH_WORDS), min_size=0, max_size=15))
def test_replacement_identical_prompts_is_identity(words):
    source, target = make_pair(words, words)
    torch.testing.assert_close(replacement_mapper(source, target), torch.eye(source.num_columns))


@FAST
@given(swaps(min_words=1), st.data())
def test_replacement_rejects_insertion(case, data):
    src_words, _, _ = case
    tgt = list(src_words)
    new = data.draw(st.sampled_from(FRESH_WORDS))
    tgt.insert(data.draw(st.integers(0, len(tgt))), new)
    source, target = make_pair(src_words, tgt)
    with pytest.raises(AlignmentError, match="refine") as err:
        replacement_mapper(source, target)
    assert "adds" in str(err.value) and new[-1][: -len("</w>")] in str(err.value)


@FAST
@given(swaps(min_words=2), st.data())
def test_replacement_rejects_deletion(case, data):
    src_words, _, _ = case
    tgt = list(src_words)
    del tgt[data.draw(st.integers(0, len(tgt) - 1))]
    source, target = make_pair(src_words, tgt)
    with pytest.raises(AlignmentError, match="refine") as err:
        replacement_mapper(source, target)
    # (with repeated words difflib may describe the deletion as an addition plus a removal)
    assert "removes" in str(err.value) or "adds" in str(err.value)


@FAST
@given(st.lists(st.sampled_from(SOURCE_WORDS), min_size=1, max_size=10), st.data())
def test_replacement_rejects_prompt_sharing_no_word(src_words, data):
    tgt = [data.draw(st.sampled_from(FRESH_WORDS)) for _ in src_words]
    source, target = make_pair(src_words, tgt)
    with pytest.raises(AlignmentError, match="shares no word"):
        replacement_mapper(source, target)


# --- replacement mapper: examples ---------------------------------------------------------------


def test_rabbit_to_teddy_bear_shares_attention():
    source, target = make_pair("a photo of a rabbit on the grass", "a photo of a ted|dy bear on the grass")
    m = replacement_mapper(source, target)
    # rabbit (column 5) feeds ted, dy, bear (5, 6, 7) with 1/3 each; "on the grass" shifts by 2.
    torch.testing.assert_close(m[5, 5:8], torch.full((3,), 1 / 3))
    assert m[5].sum().item() == pytest.approx(1.0)
    for i, j in [(1, 1), (2, 2), (3, 3), (4, 4), (6, 8), (7, 9), (8, 10), (0, 0), (9, 11)]:
        assert m[i, j] == 1.0
    assert source.token_strings[9] == END and target.token_strings[11] == END
    content = [c for c in range(CHUNK) if not source.is_special(c)]
    torch.testing.assert_close(m[content].sum(1), torch.ones(len(content)))  # rows: all attention kept


def test_swapped_span_of_several_words_is_mapped_word_by_word():
    """"happy apple" → "old iguana": as many words on both sides, other token counts (CLIP splits
    "iguana" into "igu", "ana"; tests/test_p2p_comfy.py checks that with the real tokenizer). Each
    source word feeds only its own target word, as Prompt-to-Prompt's replacement mapper does."""
    source, target = make_pair("a photo of a happy apple on a table", "a photo of a old igu|ana on a table")
    m = replacement_mapper(source, target)
    happy, apple, old, iguana = 5, 6, 5, [6, 7]
    assert m[happy, old] == 1.0 and m[happy, iguana].sum() == 0.0  # happy → old only
    torch.testing.assert_close(m[apple, iguana], torch.full((2,), 0.5))  # apple → igu, ana: 1/2 each
    assert m[apple, old] == 0.0
    for i, j in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (7, 8), (8, 9), (9, 10), (10, 11)]:
        assert m[i, j] == 1.0  # "on a table" and the end shift by one
    assert source.token_strings[10] == END and target.token_strings[11] == END
    content = [c for c in range(CHUNK) if not source.is_special(c)]
    torch.testing.assert_close(m[content].sum(1), torch.ones(len(content)))  # rows sum to 1, as P2P's


def test_two_token_word_to_one_token_word():
    source, target = make_pair("a ted|dy on a mat", "a cat on a mat")
    m = replacement_mapper(source, target)
    assert m[2, 2] == 1.0 and m[3, 2] == 1.0  # both halves of "teddy" feed "cat" with weight 1
    assert m[4, 3] == 1.0 and m[5, 4] == 1.0 and m[6, 5] == 1.0  # shift by −1
    assert m[7, 6] == 1.0  # end ← end
    assert m[:, 2].sum() == 2.0  # "cat" takes the attention of both halves of "teddy"
    torch.testing.assert_close(m[1:7].sum(1), torch.ones(6))


def test_equal_token_length_swap_is_diagonal():
    source, target = make_pair("a ted|dy bear", "a kit|ty bear")
    m = replacement_mapper(source, target)
    assert m[2, 2] == 1.0 and m[3, 3] == 1.0 and m[2, 3] == 0.0 and m[3, 2] == 0.0


def test_swap_to_a_word_already_in_the_prompt():
    source, target = make_pair("a cat and a dog", "a dog and a dog")
    m = replacement_mapper(source, target)
    assert m[2, 2] == 1.0 and m[5, 5] == 1.0 and m[3, 3] == 1.0
    torch.testing.assert_close(m.sum(0), torch.ones(CHUNK))


def test_swap_of_a_span_whose_words_recur_later():
    """The kept words "red car" also occur inside the swapped span; still a plain swap."""
    source, target = make_pair("red car next to red car", "blue truck beside a red car")
    m = replacement_mapper(source, target)
    for k in range(1, 5):
        assert m[k, k] == 1.0  # the four swapped words, diagonally
    assert m[5, 5] == 1.0 and m[6, 6] == 1.0
    assert m[1:5, 5:7].sum() == 0.0
    torch.testing.assert_close(m.sum(0), torch.ones(CHUNK))


def test_word_dropped_and_other_added_is_not_a_swap():
    """Same word count but one removed and one added: reported, not silently misaligned."""
    source, target = make_pair("a big red car", "a red car parked")
    with pytest.raises(AlignmentError, match="refine"):
        replacement_mapper(source, target)


def test_replacement_needs_same_width():
    source = make_prompt("a cat", num_chunks=1)
    target = make_prompt("a dog", num_chunks=2)
    with pytest.raises(AlignmentError, match="77-token chunks"):
        replacement_mapper(source, target)


def test_full_chunk_source_pads_take_its_end_column():
    """A source with 75 content tokens has no padding; the target's pads take its end column."""
    src = [word(f"s{k}") for k in range(75)]
    tgt = [word("X", 2)] + src[3:]  # three words → one two-token word: 74 tokens, one pad
    source, target = make_pair(src, tgt)
    m = replacement_mapper(source, target)
    assert source.token_strings[76] == END and target.token_strings[75:] == (END, PAD)
    assert m[76, 75] == 1.0 and m[76, 76] == 1.0
    torch.testing.assert_close(m[1:4, 1:3], torch.full((3, 2), 0.5))
    torch.testing.assert_close(m[1:76].sum(1), torch.ones(75))
    torch.testing.assert_close(m[:, 3:].sum(0), torch.ones(CHUNK - 3))


def test_zero_padding_with_real_bang_token():
    source, target = make_pair("wow ! a cat", "wow ! a ted|dy", pad_id=0)
    m = replacement_mapper(source, target)
    assert m[2, 2] == 1.0  # the real "!" is a word, not padding
    torch.testing.assert_close(m[4, 4:6], torch.full((2,), 0.5))
    assert m[4].sum() == 1.0 and m[5, 6] == 1.0


# --- long prompts ---------------------------------------------------------------------------------


@SLOW
@given(
    st.lists(st.sampled_from(SOURCE_WORDS[:2] + [word("on"), word("the")]), min_size=90, max_size=140),
    st.data(),
)
def test_replacement_long_prompts(src_words, data):
    positions = sorted(data.draw(st.sets(st.integers(0, len(src_words) - 1), min_size=1, max_size=12)))
    tgt_words = list(src_words)
    for p in positions:
        tgt_words[p] = data.draw(st.sampled_from(FRESH_WORDS))
    source, target = make_pair(src_words, tgt_words)
    assert source.num_columns in (154, 231)
    check_swap_mapper(source, target, positions)


def test_replacement_identity_three_chunks():
    words = [word(f"w{k}", 1 + k % 3) for k in range(100)]
    source, target = make_pair(words, words)
    assert source.num_columns == 231
    torch.testing.assert_close(replacement_mapper(source, target), torch.eye(231))


def test_replacement_second_chunk_swap_in_long_prompt():
    words = [word(f"w{k}") for k in range(100)]
    tgt = list(words)
    tgt[90] = word("X", 3)
    source, target = make_pair(words, tgt)
    m = replacement_mapper(source, target)
    assert m.shape == (154, 154)
    col = 77 + 1 + 15  # word 90 in chunk 2
    torch.testing.assert_close(m[col, col : col + 3], torch.full((3,), 1 / 3))
    assert m[col + 1, col + 3] == 1.0  # word 91 shifted by two
    assert m[50, 50] == 1.0 and m[77, 77] == 1.0


# --- global alignment ------------------------------------------------------------------------


def check_alignment(x, y, mapping):
    assert len(mapping) == len(y)
    pairs = [(i, j) for j, i in enumerate(mapping) if i >= 0]
    for (i0, j0), (i1, j1) in zip(pairs, pairs[1:]):
        assert i0 < i1 and j0 < j1
    for i, j in pairs:
        assert 0 <= i < len(x) and x[i] == y[j]
    return pairs


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from("abcd"), max_size=12),
    st.lists(st.sampled_from("abcde"), max_size=12),
)
def test_global_align_is_a_longest_common_subsequence(x, y):
    pairs = check_alignment(x, y, global_align(x, y))
    assert len(pairs) == lcs_length(x, y)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from("abc"), min_size=1, max_size=10),
    st.lists(st.tuples(st.sampled_from(["ins", "del", "sub"]), st.integers(0, 20), st.sampled_from("abcxy")), max_size=6),
)
def test_global_align_random_edits(x, edits):
    y = list(x)
    for op, pos, s in edits:
        if op == "ins":
            y.insert(pos % (len(y) + 1), s)
        elif y and op == "del":
            del y[pos % len(y)]
        elif y:
            y[pos % len(y)] = s
    pairs = check_alignment(x, y, global_align(x, y))
    assert len(pairs) == lcs_length(x, y)


def test_global_align_examples():
    assert global_align([], []) == []
    assert global_align(["a"], []) == []
    assert global_align([], ["a", "b"]) == [-1, -1]
    assert global_align(list("abc"), list("abc")) == [0, 1, 2]
    assert global_align(list("ac"), list("abc")) == [0, -1, 1]
    assert global_align(list("abc"), list("xyz")) == [-1, -1, -1]  # mismatches are never paired


# --- refinement ----------------------------------------------------------------------------------


def check_refinement(source, target):
    index, alpha = refinement_alignment(source, target)
    n = target.num_columns
    assert index.shape == (n,) and alpha.shape == (n,)
    assert index.dtype == torch.long and alpha.dtype == torch.float32
    idx, al = index.tolist(), alpha.tolist()
    assert set(al) <= {0.0, 1.0}
    pairs = [(idx[j], j) for j in range(n) if al[j] == 1]
    for (i0, j0), (i1, j1) in zip(pairs, pairs[1:]):
        assert i0 < i1 and j0 < j1
    for i, j in pairs:
        assert source.token_strings[i] == target.token_strings[j]
    assert all(idx[j] == j for j in range(n) if al[j] == 0)  # unaligned columns point at themselves
    assert len(pairs) == lcs_length(source.token_strings, target.token_strings)
    # index_to_matrix: column j is one-hot at index[j] where aligned, zero where not.
    matrix = index_to_matrix(index, alpha, source.num_columns)
    assert matrix.shape == (source.num_columns, n)
    expected = torch.zeros(source.num_columns, n)
    for i, j in pairs:
        expected[i, j] = 1.0
    assert torch.equal(matrix, expected)
    return index, alpha


def check_insertions(source, target, src_words, tgt_words, inserted):
    """Target = source with fresh words inserted: all source columns aligned, new ones not."""
    index, alpha = check_refinement(source, target)
    assert len(target.words) == len(tgt_words) and len(source.words) == len(src_words)
    kept = [k for k in range(len(tgt_words)) if k not in inserted]
    assert len(kept) == len(source.words)
    idx, al = index.tolist(), alpha.tolist()
    for s_word, k in zip(source.words, kept):  # in order, column by column
        t_word = target.words[k]
        assert s_word.text == t_word.text
        for i, j in zip(s_word.columns, t_word.columns):
            assert al[j] == 1.0 and idx[j] == i
    for k in inserted:
        for j in target.words[k].columns:
            assert al[j] == 0.0 and idx[j] == j
    for j in range(target.num_columns):
        if target.is_special(j):
            assert al[j] == 1.0
            assert source.token_strings[idx[j]] == target.token_strings[j]
    # Every source content column is used exactly once.
    used = sorted(idx[j] for j in range(target.num_columns) if al[j] == 1 and not target.is_special(j))
    assert used == [c for c in range(source.num_columns) if not source.is_special(c)]


@FAST
@given(insertions())
def test_refinement_random_insertions(case):
    src_words, tgt_words, inserted = case
    source, target = make_pair(src_words, tgt_words)
    check_insertions(source, target, src_words, tgt_words, inserted)


@FAST
@given(
    st.lists(st.sampled_from(SOURCE_WORDS), min_size=1, max_size=10),
    st.lists(
        st.tuples(st.sampled_from(["ins", "del", "sub"]), st.integers(0, 30), st.sampled_from(SOURCE_WORDS + FRESH_WORDS)),
        max_size=6,
    ),
)
def test_refinement_random_edits(src_words, edits):
    tgt = list(src_words)
    for op, pos, w in edits:
        if op == "ins":
            tgt.insert(pos % (len(tgt) + 1), w)
        elif tgt and op == "del":
            del tgt[pos % len(tgt)]
        elif tgt:
            tgt[pos % len(tgt)] = w
    source, target = make_pair(src_words, tgt)
    shared = set(t for w in src_words for t in w) & set(t for w in tgt for t in w)
    if not shared:
        with pytest.raises(AlignmentError, match="keeps no word"):
            refinement_alignment(source, target)
    else:
        check_refinement(source, target)


@FAST
@given(st.lists(st.sampled_from(SOURCE_WORDS + FRESH_WORDS), max_size=15))
def test_refinement_identical_prompts(words):
    source, target = make_pair(words, words)
    if not words:
        with pytest.raises(AlignmentError):
            refinement_alignment(source, target)
        return
    index, alpha = refinement_alignment(source, target)
    assert torch.equal(index, torch.arange(source.num_columns))
    assert torch.equal(alpha, torch.ones(source.num_columns))
    torch.testing.assert_close(index_to_matrix(index, alpha, source.num_columns), torch.eye(source.num_columns))


def test_refinement_example():
    source, target = make_pair("a car on the street", "an old car on the street in ha|waii")
    index, alpha = refinement_alignment(source, target)
    # target: <s> an old car on the street in ha waii </e>
    assert alpha[:12].tolist() == [1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1]
    assert index[[0, 3, 4, 5, 6, 10]].tolist() == [0, 2, 3, 4, 5, 6]
    assert index[[1, 2, 7, 8, 9]].tolist() == [1, 2, 7, 8, 9]


def test_refinement_rejects_prompt_sharing_nothing():
    source, target = make_pair("a cat", "two dogs")
    with pytest.raises(AlignmentError, match="keeps no word"):
        refinement_alignment(source, target)


def test_refinement_needs_same_width():
    with pytest.raises(AlignmentError, match="77-token chunks"):
        refinement_alignment(make_prompt("a cat"), make_prompt("a big cat", num_chunks=2))


def test_index_to_matrix_small():
    index = torch.tensor([2, 1, 0, 3])
    alpha = torch.tensor([1.0, 0.0, 1.0, 1.0])
    expected = torch.tensor(
        [[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float32
    )
    torch.testing.assert_close(index_to_matrix(index, alpha, 5), expected)


# --- refinement: long prompts ----------------------------------------------------------------------


@SLOW
@given(st.lists(st.sampled_from(SOURCE_WORDS[:4]), min_size=80, max_size=100), st.data())
def test_refinement_long_prompts_random_insertions(src_words, data):
    """Insertions anywhere shift words across chunk boundaries: still a valid longest alignment."""
    tgt = list(src_words)
    for _ in range(data.draw(st.integers(1, 6))):
        tgt.insert(data.draw(st.integers(0, len(tgt))), data.draw(st.sampled_from(FRESH_WORDS[:3])))
    source, target = make_pair(src_words, tgt)
    assert source.num_columns in (154, 231)
    index, alpha = check_refinement(source, target)
    fresh = {t for w in FRESH_WORDS for t in w}
    for j in range(target.num_columns):
        if target.token_strings[j] in fresh:
            assert alpha[j] == 0.0


@SLOW
@given(st.integers(80, 140), st.data())
def test_refinement_long_prompt_insertions_in_last_chunk(n_words, data):
    """Insertions past the source's last chunk boundary keep every source token aligned."""
    src_words = [word(f"w{k}", 1 + k % 2) for k in range(n_words)]
    source0 = make_prompt(src_words)
    first_in_last = next(k for k, w in enumerate(source0.words) if w.columns[0] >= (source0.num_chunks - 1) * CHUNK)
    tgt = list(src_words)
    room = CONTENT - sum(len(w) for w in src_words[first_in_last:])
    count = data.draw(st.integers(1, 4))
    for _ in range(count):
        new = data.draw(st.sampled_from(FRESH_WORDS[:3]))
        if room < len(new):
            break
        room -= len(new)
        tgt.insert(data.draw(st.integers(first_in_last, len(tgt))), new)
    source, target = make_pair(src_words, tgt)
    assert source.num_columns == target.num_columns and source.num_columns in (154, 231)
    inserted = [k for k, w in enumerate(tgt) if w in FRESH_WORDS]
    check_insertions(source, target, src_words, tgt, inserted)


def test_refinement_three_chunks_shape():
    words = [word(f"w{k}", 2) for k in range(100)]
    tgt = list(words)
    tgt.insert(10, word("X"))
    source, target = make_pair(words, tgt)
    index, alpha = check_refinement(source, target)
    assert index.shape == (231,) and alpha.shape == (231,)
    assert alpha[21] == 0.0  # "X" at word 10, column 1 + 20
    assert (alpha[:21] == 1).all()


def test_equal_word_text_with_other_token_count_does_not_crash():
    """A word cut by a chunk end can have the text of a whole word but other tokens ("ted|dy"
    → "teddy"); such an "equal" word is mapped like a swap instead of failing to broadcast."""
    source, target = make_pair("a ted|dy|bear on a mat", "a tedd|ybear on a rug")
    m = replacement_mapper(source, target)
    assert source.words[1].text == target.words[1].text == "teddybear"
    torch.testing.assert_close(m[2:5, 2:4], torch.full((3, 2), 0.5))
    assert m[5, 4] == 1.0 and m[6, 5] == 1.0 and m[7, 6] == 1.0
