"""Tests of an edit from its description to its plan (synthetic prompts, no tokenizer): step windows
(attention/step_window.py), word-input parsing (attention/word_input.py), the edit and its input
checks (attention/edit_spec.py), plans with their per-step coefficients and local-blend selectors
(attention/edit_plan.py), and the error classes' common base."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from comfyui_prompt_edit.attention.cross_step import CrossStep
from comfyui_prompt_edit.attention.edit_plan import align_plan
from comfyui_prompt_edit.attention.edit_spec import ControlSettings, LocalBlend, P2PEdit, Reweight
from comfyui_prompt_edit.attention.errors import P2PInputError
from comfyui_prompt_edit.attention.seq_aligner import (
    AlignmentError,
    index_to_matrix,
    refinement_alignment,
    replacement_mapper,
)
from comfyui_prompt_edit.attention.step_window import Window
from comfyui_prompt_edit.attention.word_input import checked_words, parse_word_windows
from comfyui_prompt_edit.base.errors import PromptEditError

from synthetic import CHUNK, make_prompt


def tokenize_words(s: str) -> tuple[str, ...]:
    """Stand-in for ``clip_words``: CLIP words of a user string (here: whitespace split)."""
    return tuple(s.split())


def edit_of(source: str, *targets: str) -> P2PEdit:
    return P2PEdit(make_prompt(source), tuple(make_prompt(t) for t in targets))


def cols(prompt, *words: str) -> list[int]:
    (hit,) = prompt.find(words)
    return list(hit)


# --- Window -------------------------------------------------------------------------------------


def active_steps(window: Window, num_steps: int) -> list[int]:
    return [t for t in range(num_steps) if window.active(t, num_steps)]


def test_window_boundaries():
    assert active_steps(Window(0.0, 0.8), 10) == list(range(8))
    assert active_steps(Window(0.2, 0.5), 10) == [2, 3, 4]
    assert active_steps(Window(0.0, 1.0), 7) == list(range(7))
    assert active_steps(Window(0.5, 0.5), 10) == []
    assert active_steps(Window(0.0, 0.0), 10) == []
    assert active_steps(Window(0.25, 0.75), 4) == [1, 2]
    assert active_steps(Window(0.0, 0.8), 20) == list(range(16))
    assert not Window(0.0, 1.0).active(10, 10)  # past the last step


@pytest.mark.parametrize("start, end", [(0.6, 0.2), (-0.1, 0.5), (0.0, 1.1), (1.2, 1.3)])
def test_window_rejects_bad_bounds(start, end):
    with pytest.raises(P2PInputError, match="step window"):
        Window(start, end)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 150), st.data())
def test_window_of_step_fractions_covers_exactly_those_steps(num_steps, data):
    """``Window(a/n, b/n)`` over ``n`` steps is active on steps ``a..b-1`` (no float truncation)."""
    a = data.draw(st.integers(0, num_steps))
    b = data.draw(st.integers(a, num_steps))
    assert active_steps(Window(a / num_steps, b / num_steps), num_steps) == list(range(a, b))


def test_window_decimal_fraction_of_hundred_steps():
    assert len(active_steps(Window(0.0, 0.29), 100)) == 29
    assert active_steps(Window(0.57, 0.58), 100) == [57]


# --- parse_word_windows ------------------------------------------------------------------------


def test_parse_word_windows_formats():
    assert parse_word_windows("dog=0.4", tokenize_words) == ((("dog",), Window(0.0, 0.4)),)
    assert parse_word_windows("dog=0.1-0.6", tokenize_words) == ((("dog",), Window(0.1, 0.6)),)
    assert parse_word_windows(" dog = 0.1 - 0.6 ", tokenize_words) == ((("dog",), Window(0.1, 0.6)),)
    assert parse_word_windows("", tokenize_words) == ()
    assert parse_word_windows(" ,\n, ", tokenize_words) == ()


def test_parse_word_windows_several_entries():
    spec = "dog=0.4, cat=0.2-0.3\nteddy bear=1\n\n"
    assert parse_word_windows(spec, tokenize_words) == (
        (("dog",), Window(0.0, 0.4)),
        (("cat",), Window(0.2, 0.3)),
        (("teddy", "bear"), Window(0.0, 1.0)),
    )


def test_parse_word_windows_uses_the_tokenizer():
    calls = []

    def tok(s):
        calls.append(s)
        return ("teddy", "-", "bear") if s == "teddy-bear" else (s,)

    assert parse_word_windows("teddy-bear=0.5", tok) == ((("teddy", "-", "bear"), Window(0.0, 0.5)),)
    assert calls == ["teddy-bear"]


@pytest.mark.parametrize(
    "entry",
    ["dog", "dog=abc", "dog=0.1-0.2-0.3", "dog=0.7-0.2", "dog=1.5", "dog=", "=0.4", "dog=-0.4"],
)
def test_parse_word_windows_bad_entry_names_it(entry):
    with pytest.raises(P2PInputError) as err:
        parse_word_windows(f"cat=0.5, {entry}", tokenize_words)
    assert repr(entry) in str(err.value)


# --- align_plan: replace ----------------------------------------------------------------------


def test_replace_plan_tensors():
    edit = edit_of("a photo of a cat", "a photo of a ted|dy")
    plan = align_plan(edit, ControlSettings("replace", Window(0.0, 0.5)))
    n = CHUNK
    assert plan.mapper.shape == (1, n, n)
    torch.testing.assert_close(plan.mapper[0], replacement_mapper(edit.source, edit.targets[0]))
    assert torch.equal(plan.alpha, torch.ones(1, n))
    assert torch.equal(plan.weights, torch.ones(1, n))
    assert len(plan.column_windows) == 1 and len(plan.column_windows[0]) == n


def test_replace_coefficients_inside_and_outside_window():
    edit = edit_of("a photo of a cat", "a photo of a dog")
    plan = align_plan(edit, ControlSettings("replace", Window(0.0, 0.5)))
    inside = plan.cross_step(4, 10)
    assert torch.equal(inside.c_src, torch.ones(1, CHUNK))
    assert torch.equal(inside.c_own, torch.zeros(1, CHUNK))
    assert inside.use_src and not inside.use_own and not inside.is_identity
    outside = plan.cross_step(5, 10)
    assert torch.equal(outside.c_src, torch.zeros(1, CHUNK))
    assert torch.equal(outside.c_own, torch.ones(1, CHUNK))
    assert not outside.use_src and outside.use_own and outside.is_identity


def test_replace_with_reweight():
    edit = edit_of("a photo of a cat", "a photo of a dog").with_reweight(Reweight(("dog",), 2.5))
    plan = align_plan(edit, ControlSettings("replace", Window(0.0, 0.5)))
    dog = cols(edit.targets[0], "dog")
    expected_w = torch.ones(1, CHUNK)
    expected_w[0, dog] = 2.5
    assert torch.equal(plan.weights, expected_w)
    inside = plan.cross_step(0, 10)
    assert torch.equal(inside.c_src, expected_w)  # c_src = w inside
    assert torch.equal(inside.c_own, torch.zeros(1, CHUNK))
    outside = plan.cross_step(9, 10)
    assert torch.equal(outside.c_src, torch.zeros(1, CHUNK))
    assert torch.equal(outside.c_own, torch.ones(1, CHUNK))  # c_own = 1 outside, reweight or not


@pytest.mark.parametrize("kind, target", [("replace", "a photo of a dog"), ("refine", "a photo of a big dog")])
def test_all_ones_reweight_is_no_reweight(kind, target):
    base = edit_of("a photo of a cat", target)
    ones = base.with_reweight(Reweight(("dog",), 1.0)).with_reweight(Reweight(("photo",), 1.0))
    settings_ = ControlSettings(kind, Window(0.1, 0.6))
    plain, reweighted = align_plan(base, settings_), align_plan(ones, settings_)
    for step in (0, 1, 3, 5, 6, 9):
        a, b = plain.cross_step(step, 10), reweighted.cross_step(step, 10)
        assert torch.equal(a.c_src, b.c_src) and torch.equal(a.c_own, b.c_own)
        assert (a.use_src, a.use_own) == (b.use_src, b.use_own)


def test_negative_reweight_is_allowed():
    edit = edit_of("a photo of a cat", "a photo of a dog").with_reweight(Reweight(("dog",), -1.0))
    step = align_plan(edit, ControlSettings("replace", Window(0.0, 1.0))).cross_step(0, 10)
    dog = cols(edit.targets[0], "dog")
    assert step.c_src[0, dog].tolist() == [-1.0]
    assert step.c_src[0, [c for c in range(CHUNK) if c not in dog]].eq(1).all()
    assert step.use_src


def test_reweight_of_multi_token_word_sequence_covers_all_its_columns():
    edit = edit_of("a cat on a mat", "a ted|dy bear on a mat").with_reweight(Reweight(("teddy", "bear"), 3.0))
    plan = align_plan(edit, ControlSettings("replace"))
    assert plan.weights[0, [2, 3, 4]].tolist() == [3.0, 3.0, 3.0]
    assert plan.weights[0].sum().item() == pytest.approx(CHUNK - 3 + 9.0)


def test_replace_with_added_word_is_an_input_error_pointing_to_refine():
    edit = edit_of("a photo of a cat", "a photo of a big cat")
    with pytest.raises(P2PInputError, match="refine") as err:
        align_plan(edit, ControlSettings("replace"))
    assert "prompt 1" in str(err.value)


# --- align_plan: refine -----------------------------------------------------------------------


def test_refine_plan_and_coefficients():
    edit = edit_of("a cat on a mat", "a fluf|fy cat on a red mat").with_reweight(Reweight(("fluffy",), 2.0))
    plan = align_plan(edit, ControlSettings("refine", Window(0.0, 0.5)))
    source, target = edit.source, edit.targets[0]
    index, alpha = refinement_alignment(source, target)
    assert torch.equal(plan.alpha[0], alpha)
    assert torch.equal(plan.mapper[0], index_to_matrix(index, alpha, CHUNK))
    new = cols(target, "fluffy") + cols(target, "red")
    assert new == [2, 3, 7]
    assert plan.alpha[0, new].tolist() == [0.0, 0.0, 0.0]
    old = [c for c in range(CHUNK) if c not in new]
    assert plan.alpha[0, old].eq(1).all()

    inside = plan.cross_step(2, 10)
    # aligned columns take the source's attention (c_src = w, c_own = 0) ...
    assert inside.c_src[0, old].eq(1).all() and inside.c_own[0, old].eq(0).all()
    # ... new tokens keep their own (c_own = w, reweighted here for "fluffy"), take nothing from the source
    assert inside.c_src[0, new].eq(0).all()
    assert inside.c_own[0, new].tolist() == [2.0, 2.0, 1.0]
    assert inside.use_src and inside.use_own and not inside.is_identity

    outside = plan.cross_step(7, 10)
    assert outside.c_src.eq(0).all() and outside.c_own.eq(1).all() and outside.is_identity


def test_refine_reweight_on_aligned_word_scales_source_term():
    edit = edit_of("a cat on a mat", "a big cat on a mat").with_reweight(Reweight(("cat",), 0.5))
    step = align_plan(edit, ControlSettings("refine")).cross_step(0, 10)
    cat = cols(edit.targets[0], "cat")
    assert step.c_src[0, cat].tolist() == [0.5] and step.c_own[0, cat].tolist() == [0.0]


def test_refine_with_no_shared_word_is_an_input_error():
    with pytest.raises(P2PInputError, match="refine edit, prompt 1"):
        align_plan(edit_of("a cat", "two dogs"), ControlSettings("refine"))


# --- align_plan: reweight only ----------------------------------------------------------------


def test_reweight_only_plan():
    edit = edit_of("a photo of a cat", "a photo of a cat").with_reweight(Reweight(("cat",), 0.0))
    plan = align_plan(edit, ControlSettings("reweight", Window(0.0, 0.5)))
    assert torch.equal(plan.mapper[0], torch.eye(CHUNK))
    cat = cols(edit.targets[0], "cat")
    inside = plan.cross_step(0, 10)
    expected = torch.ones(1, CHUNK)
    expected[0, cat] = 0.0
    assert torch.equal(inside.c_src, expected) and inside.c_own.eq(0).all()
    assert plan.cross_step(5, 10).is_identity


def test_reweight_only_with_differing_prompts_raises():
    edit = edit_of("a photo of a cat", "a photo of a dog")
    with pytest.raises(P2PInputError) as err:
        align_plan(edit, ControlSettings("reweight"))
    msg = str(err.value)
    assert "'replace'" in msg or "'refine'" in msg
    assert "prompt 1" in msg


def test_reweight_word_not_in_any_edited_prompt_raises():
    edit = edit_of("a photo of a cat", "a photo of a dog", "a photo of a ted|dy")
    with pytest.raises(P2PInputError, match="'cat'"):
        edit.with_reweight(Reweight(("cat",), 2.0))  # only in the source
    with pytest.raises(P2PInputError, match="'photo dog'"):
        edit.with_reweight(Reweight(("photo", "dog"), 2.0))  # words present, not as a sequence
    assert edit.with_reweight(Reweight(("teddy",), 2.0)).reweights == (Reweight(("teddy",), 2.0),)


def test_reweight_only_applies_where_the_word_is():
    edit = edit_of("a cat", "a dog", "a cow").with_reweight(Reweight(("dog",), 2.0))
    plan = align_plan(edit, ControlSettings("replace"))
    assert plan.weights.shape == (2, CHUNK)
    assert plan.weights[0, 2] == 2.0 and plan.weights[0].sum() == CHUNK + 1
    assert plan.weights[1].eq(1).all()


def test_every_occurrence_is_reweighted():
    edit = edit_of("a cat and a cat", "a dog and a dog").with_reweight(Reweight(("dog",), 3.0))
    plan = align_plan(edit, ControlSettings("replace"))
    assert plan.weights[0, [2, 5]].tolist() == [3.0, 3.0]


# --- per-word windows -------------------------------------------------------------------------


def test_word_window_overrides_only_that_words_columns():
    edit = edit_of("a ted|dy bear on a mat", "a ted|dy bear on a rug")
    windows = parse_word_windows("teddy bear=0.2", tokenize_words)
    plan = align_plan(edit, ControlSettings("replace", Window(0.0, 0.8), windows))
    teddy_bear = cols(edit.targets[0], "teddy", "bear")
    assert teddy_bear == [2, 3, 4]
    others = [c for c in range(CHUNK) if c not in teddy_bear]
    assert all(plan.column_windows[0][c] == Window(0.0, 0.2) for c in teddy_bear)
    assert all(plan.column_windows[0][c] == Window(0.0, 0.8) for c in others)

    early = plan.cross_step(1, 10)
    assert early.c_src.eq(1).all() and early.c_own.eq(0).all()
    mid = plan.cross_step(4, 10)  # outside the word's window, inside the prompt's
    assert mid.c_src[0, teddy_bear].eq(0).all() and mid.c_own[0, teddy_bear].eq(1).all()
    assert mid.c_src[0, others].eq(1).all() and mid.c_own[0, others].eq(0).all()
    late = plan.cross_step(8, 10)
    assert late.is_identity


def test_word_window_can_extend_past_the_prompt_window():
    edit = edit_of("a cat on a mat", "a dog on a mat")
    plan = align_plan(edit, ControlSettings("replace", Window(0.0, 0.3), ((("dog",), Window(0.0, 1.0)),)))
    step = plan.cross_step(6, 10)
    dog = cols(edit.targets[0], "dog")
    assert step.c_src[0].nonzero().flatten().tolist() == dog
    assert step.use_src and not step.is_identity


def test_word_window_applies_per_target():
    edit = edit_of("a cat", "a dog", "a cow")
    plan = align_plan(edit, ControlSettings("replace", Window(0.0, 0.8), ((("dog",), Window(0.0, 0.1)),)))
    step = plan.cross_step(5, 10)
    assert step.c_src[0, 2] == 0.0 and step.c_own[0, 2] == 1.0  # "dog" in prompt 1 released
    assert step.c_src[1, 2] == 1.0 and step.c_own[1, 2] == 0.0  # "cow" in prompt 2 still injected


def test_word_window_for_word_in_no_edited_prompt_raises():
    edit = edit_of("a cat", "a dog")
    with pytest.raises(P2PInputError, match="'cat'"):
        align_plan(edit, ControlSettings("replace", word_windows=((("cat",), Window(0.0, 0.3)),)))


# --- settings, self attention, CrossStep --------------------------------------------------------


def test_control_settings_validation():
    with pytest.raises(P2PInputError, match="edit kind"):
        ControlSettings("swap")
    with pytest.raises(P2PInputError, match="self_attention_layers"):
        ControlSettings("replace", self_layers="fine")


def test_self_injection_window():
    plan = align_plan(edit_of("a cat", "a dog"), ControlSettings("replace", self_window=Window(0.0, 0.4)))
    assert [plan.self_injection(t, 10) for t in range(10)] == [True] * 4 + [False] * 6


def test_cross_step_to_dtype():
    plan = align_plan(edit_of("a cat", "a dog"), ControlSettings("replace"))
    step = plan.cross_step(0, 10).to(torch.device("cpu"), torch.float16)
    assert isinstance(step, CrossStep)
    assert step.mapper.dtype == step.c_src.dtype == step.c_own.dtype == torch.float16
    assert step.use_src and not step.use_own


def test_multiple_targets_stack():
    edit = edit_of("a cat on a mat", "a dog on a mat", "a ted|dy on a mat")
    plan = align_plan(edit, ControlSettings("replace"))
    assert plan.mapper.shape == (2, CHUNK, CHUNK) and edit.batch_size == 3
    torch.testing.assert_close(plan.mapper[1, 2, 2:4], torch.full((2,), 0.5))


def test_long_prompt_plan():
    src = " ".join(f"w{k}" for k in range(100))
    edit = P2PEdit(make_prompt(src), (make_prompt(src.replace("w90", "ted|dy")),))
    plan = align_plan(edit, ControlSettings("replace", Window(0.0, 0.5), ((("teddy",), Window(0.0, 0.2)),)))
    assert plan.mapper.shape == (1, 154, 154) and plan.column_windows[0][77 + 16] == Window(0.0, 0.2)
    step = plan.cross_step(3, 10)
    assert step.c_own[0, [93, 94]].tolist() == [1.0, 1.0] and step.c_own[0, 10] == 0.0


# --- local blend ----------------------------------------------------------------------------------


def test_local_blend_checks_source_words():
    edit = edit_of("a cat on a mat", "a dog on a mat")
    with pytest.raises(P2PInputError, match="'dog'") as err:
        edit.with_local_blend(LocalBlend((("dog",),), (("dog",),)))
    assert "source" in str(err.value)


def test_local_blend_checks_each_target():
    edit = edit_of("a cat on a mat", "a dog on a mat", "a cow on a mat")
    with pytest.raises(P2PInputError, match="edited prompt 2") as err:
        edit.with_local_blend(LocalBlend((("cat",),), (("dog",),)))
    assert "'dog'" in str(err.value)
    ok = edit.with_local_blend(LocalBlend((("cat",),), (("dog",), ("cow",))))
    assert ok.local_blend.target_words == (("dog",), ("cow",))
    assert edit.with_local_blend(LocalBlend((("cat",),), ())).local_blend is not None  # no target words


def test_plan_without_local_blend_has_no_selectors():
    assert align_plan(edit_of("a cat", "a dog"), ControlSettings("replace")).blend_selectors is None


def test_blend_word_selectors():
    edit = edit_of("a cat on a cat mat", "a ted|dy bear on a cat mat", "a dog on a cat mat")
    edit = edit.with_local_blend(LocalBlend((("cat",),), (("teddy", "bear"), ("dog",), ("mat",))))
    sel = align_plan(edit, ControlSettings("replace")).blend_selectors
    assert sel.shape == (3, CHUNK)
    assert sel[0].nonzero().flatten().tolist() == [2, 5]  # both "cat"s of the source
    assert sel[1].nonzero().flatten().tolist() == [2, 3, 4, 8]  # "teddy bear" and "mat"
    assert sel[2].nonzero().flatten().tolist() == [2, 6]  # "dog" and "mat"
    assert set(sel.unique().tolist()) == {0.0, 1.0}


def test_checked_words():
    assert checked_words(["cat", "teddy bear"], tokenize_words, "words") == (("cat",), ("teddy", "bear"))
    with pytest.raises(P2PInputError, match="source_words"):
        checked_words(["cat", "  "], tokenize_words, "source_words")


# --- errors ---------------------------------------------------------------------------------------


def test_input_errors_share_the_packs_error_base():
    assert issubclass(P2PInputError, PromptEditError) and issubclass(AlignmentError, PromptEditError)
    assert issubclass(PromptEditError, ValueError)
