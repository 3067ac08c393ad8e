"""Word spans of T5 prompts (Flux: T5 alone; SD3: CLIP-L‖G columns, then T5's), and the word
alignments of two T5 prompts: pure tests on SentencePiece pieces, then with ComfyUI's real T5
tokenizer in the tiny Flux and SD3 text encoders (tests/harness/mmdit_models.py)."""

from __future__ import annotations

import pytest
import torch

from comfyui_prompt_edit.attention.seq_aligner import refinement_alignment, replacement_mapper
from comfyui_prompt_edit.attention.tokens import (
    END,
    PAD,
    PromptTokens,
    group_t5_words,
    prompt_tokens_from_chunks,
)

from synthetic import make_prompt

T5_LENGTH = 16
T5_END, T5_PAD = 1, 0


def t5_prompt(pieces: list[str], length: int = T5_LENGTH) -> PromptTokens:
    """A T5 context laid out as ComfyUI lays it out: the pieces, ``</s>``, then pad tokens."""
    vocab = {"<pad>": T5_PAD, "</s>": T5_END}
    ids = [vocab.setdefault(p, len(vocab) + 10) for p in pieces]
    strings = {i: s for s, i in vocab.items()}
    chunk = ids + [T5_END] + [T5_PAD] * (length - len(ids) - 1)
    return prompt_tokens_from_chunks(" ".join(pieces), [chunk], strings.__getitem__, T5_END, False,
                                     group=group_t5_words, cased=True)


def words(prompt: PromptTokens) -> list[tuple[str, tuple[int, ...]]]:
    return [(w.text, w.columns) for w in prompt.words]


# -- word spans from pieces --------------------------------------------------------------------------


def test_t5_words_join_a_lone_space_piece_and_a_word_split_into_pieces():
    prompt = t5_prompt(["▁", "a", "▁photo", "▁of", "▁", "x", "y", "zzy"])
    assert words(prompt) == [("a", (0, 1)), ("photo", (2,)), ("of", (3,)), ("xyzzy", (4, 5, 6, 7))]
    assert prompt.token_strings[8:] == (END,) + (PAD,) * 7 and prompt.num_columns == prompt.chunk_length == T5_LENGTH
    assert prompt.find(["xyzzy"]) == [(4, 5, 6, 7)] and prompt.find(["photo", "of"]) == [(2, 3)]
    assert all(prompt.is_special(c) for c in range(8, T5_LENGTH))


def test_t5_words_split_punctuation_as_clip_does_and_keep_case():
    # ComfyUI's pieces of "a Teddy-bear, (red:1.2) car": the weight syntax leaves "▁red"
    prompt = t5_prompt(["▁", "a", "▁Teddy", "-", "be", "ar", ",", "▁red", "▁car"])
    assert words(prompt) == [("a", (0, 1)), ("Teddy", (2,)), ("-", (3,)), ("bear", (4, 5)), (",", (6,)),
                             ("red", (7,)), ("car", (8,))]
    assert prompt.find(["Teddy", "-", "bear"]) == [(2, 3, 4, 5)]
    assert prompt.find(["teddy"]) == []  # T5 tells cases apart: "teddy" is other pieces
    upper = t5_prompt(["▁A", "▁TE", "DD", "Y", "▁", ",", "▁car"])
    assert words(upper) == [("A", (0,)), ("TEDDY", (1, 2, 3)), (",", (4, 5)), ("car", (6,))]


def test_a_joined_context_finds_words_in_both_parts_at_their_columns():
    clip_part = make_prompt("a teddy bear on a car")  # CLIP words, lowercase, 77 columns
    t5_part = t5_prompt(["▁", "a", "▁Teddy", "▁bear", "▁on", "▁", "a", "▁car"])
    joined = PromptTokens.joined("a Teddy bear on a car", (clip_part, t5_part))
    assert joined.num_columns == 77 + T5_LENGTH
    assert joined.token_strings[77:] == t5_part.token_strings
    # the T5 words' case is kept; the CLIP part matches them lowercased
    assert joined.find(["Teddy", "bear"]) == [clip_part.find(["teddy", "bear"])[0], (79, 80)]
    assert joined.find(["car"]) == [clip_part.find(["car"])[0], (84,)]
    assert [w.columns for w in joined.words][-1] == (84,)


# -- alignments of two T5 prompts ------------------------------------------------------------------


def test_replacement_mapper_of_t5_prompts_maps_words_and_the_tail():
    source = t5_prompt(["▁", "a", "▁cat", "▁on", "▁", "a", "▁mat"])
    target = t5_prompt(["▁", "a", "▁T", "ed", "dy", "▁on", "▁", "a", "▁mat"])
    mapper = replacement_mapper(source, target)
    assert mapper.shape == (T5_LENGTH, T5_LENGTH)
    assert mapper[0, 0] == mapper[1, 1] == 1 and mapper[3, 5] == 1 and mapper[6, 8] == 1  # kept words shift
    assert torch.allclose(mapper[2, 2:5], torch.full((3,), 1 / 3))  # cat → Teddy (3 pieces)
    assert mapper[7, 9] == 1  # </s> → </s>
    assert all(mapper[7 + k, 9 + k] == 1 for k in range(1, 7))  # padding → padding, in order
    assert torch.allclose(mapper[:, 2:5].sum(0), torch.full((3,), 1 / 3)) and (mapper.sum(0) > 0).all()  # all mapped


def test_refinement_alignment_of_t5_prompts_marks_the_added_word_new():
    source = t5_prompt(["▁", "a", "▁cat"])
    target = t5_prompt(["▁", "a", "▁red", "▁cat"])
    index, alpha = refinement_alignment(source, target)
    assert alpha[:4].tolist() == [1, 1, 0, 1] and index[3] == 2 and index[4] == 3  # cat, </s>
    assert alpha[4:].all()


def test_mappers_of_joined_contexts_are_block_diagonal_over_clip_and_t5():
    s_parts = (make_prompt("a cat on a mat"), t5_prompt(["▁", "a", "▁cat", "▁on", "▁", "a", "▁mat"]))
    t_parts = (make_prompt("a dog on a mat"), t5_prompt(["▁", "a", "▁dog", "▁on", "▁", "a", "▁mat"]))
    source, target = PromptTokens.joined("s", s_parts), PromptTokens.joined("t", t_parts)
    mapper = replacement_mapper(source, target)
    assert torch.equal(mapper[:77, :77], replacement_mapper(*[p[0] for p in (s_parts, t_parts)]))
    assert torch.equal(mapper[77:, 77:], replacement_mapper(s_parts[1], t_parts[1]))
    assert mapper[:77, 77:].abs().sum() == 0 and mapper[77:, :77].abs().sum() == 0
    r_parts = (make_prompt("a fat cat on a mat"), t5_prompt(["▁", "a", "▁fat", "▁cat", "▁on", "▁", "a", "▁mat"]))
    index, alpha = refinement_alignment(source, PromptTokens.joined("r", r_parts))
    clip_index, clip_alpha = refinement_alignment(s_parts[0], r_parts[0])
    t5_index, t5_alpha = refinement_alignment(s_parts[1], r_parts[1])
    assert torch.equal(index, torch.cat([clip_index, t5_index + 77]))
    assert torch.equal(alpha, torch.cat([clip_alpha, t5_alpha])) and alpha[77 + 2] == 0
    assert (index[:77] < 77).all() and (index[77:] >= 77).all()


# -- with ComfyUI's T5 tokenizer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips():
    from harness import comfyui, mmdit_models

    comfyui.ensure_comfyui()
    return {"flux": mmdit_models.tiny_flux_clip(), "sd3": mmdit_models.tiny_sd3_clip()}


@pytest.mark.comfy
@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_p2p_prompts_of_a_t5_clip_carry_words_at_the_context_columns(which, clips):
    from comfyui_prompt_edit.attention.clip_tokens import clip_words, encode_prompts

    clip = clips[which]
    prompts = ["a Teddy-bear, (red:1.2) car", "A TEDDY bear on a blue car"]
    positive, (source, target), encoder = encode_prompts(clip, prompts)
    cond = positive[0][0]
    assert encoder == "t5" and source.num_columns == target.num_columns == cond.shape[1]
    clip_columns = 0 if which == "flux" else 77
    assert cond.shape[1] == clip_columns + 256 if which == "flux" else cond.shape[1] == 77 + 77
    t5_words = [(w.text, tuple(c - clip_columns for c in w.columns)) for w in source.words if w.columns[0] >= clip_columns]
    assert t5_words == [("a", (0, 1)), ("Teddy", (2,)), ("-", (3,)), ("bear", (4, 5)), (",", (6,)),
                        ("red", (7,)), ("car", (8,))]
    assert source.token_strings[clip_columns + 9] == END and source.is_special(cond.shape[1] - 1)
    assert clip_words(clip, "Teddy-bear") == ("Teddy", "-", "bear")
    assert [w.text for w in target.words if w.columns[0] >= clip_columns] == ["A", "TEDDY", "bear", "on", "a", "blue", "car"]
    hits = source.find(clip_words(clip, "Teddy-bear"))
    if which == "flux":
        assert hits == [(2, 3, 4, 5)]
    else:  # the CLIP words (lowercase, one column each) and the T5 words
        assert hits == [(2, 3, 4), (79, 80, 81, 82)]
        assert [w.text for w in source.words if w.columns[0] < 77] == ["a", "teddy", "-", "bear", ",", "red", "car"]
    mapper = replacement_mapper(*encode_prompts(clip, ["a cat on a mat", "a dog on a mat"])[1])
    assert mapper.shape == (cond.shape[1],) * 2
    dog_t5 = clip_columns + 2  # "▁", "a", "▁cat" / "▁dog": one piece each in T5's vocabulary
    assert mapper[dog_t5, dog_t5] == 1 and mapper[clip_columns:, :clip_columns].abs().sum() == 0
    assert (mapper.sum(0) > 0).all()  # every column of the edit gets the source's attention
