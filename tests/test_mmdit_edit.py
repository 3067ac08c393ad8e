"""The MMDiT qk edit's core (attention/mmdit_edit.py) and the dit block patch it is installed with
(patching/compose.py), without ComfyUI."""

from __future__ import annotations

import pytest
import torch

from comfyui_prompt_edit.attention.edit_spec import LocalBlend, P2PEdit, Reweight, T5_ENCODER
from comfyui_prompt_edit.attention.errors import P2PInputError
from comfyui_prompt_edit.attention.mmdit_edit import (
    QKEdit, QKOverride, QKSettings, check_mmdit_request, with_source_image_tokens)
from comfyui_prompt_edit.attention.mmdit_blocks import select_blocks
from comfyui_prompt_edit.attention.mmdit_maps import MapRecordingOverride
from comfyui_prompt_edit.attention.step_window import Window
from comfyui_prompt_edit.attention.tokens import PromptTokens, Word
from comfyui_prompt_edit.base.errors import PromptEditError
from comfyui_prompt_edit.patching.compose import ComposedBlock


def t5_edit(targets: int = 1, **kw) -> P2PEdit:
    return P2PEdit(PromptTokens.text_only("a cat"), tuple(PromptTokens.text_only(f"a dog {i}") for i in range(targets)),
                   encoder=T5_ENCODER, **kw)


def sampling_options(step: int, steps: int = 10, chunks=(0,)) -> dict:
    schedule = torch.linspace(1.0, 0.0, steps + 1)
    return {"sigmas": schedule[step:step + 1], "sample_sigmas": schedule, "cond_or_uncond": list(chunks)}


@pytest.mark.parametrize("token_axis", [1, 2])
def test_edit_rows_get_the_source_image_tokens_of_their_own_chunk_only(token_axis):
    text, image, batch = 3, 5, 3
    shape = (2 * batch, text + image, 4) if token_axis == 1 else (2 * batch, 2, text + image, 4)
    x = torch.randn(shape)
    chunks = [(slice(0, batch), False), (slice(batch, 2 * batch), True)]  # [uncond, cond] as SD3 orders them
    out = with_source_image_tokens(x, token_axis, text, chunks)
    img = lambda t: t.narrow(token_axis, text, image)  # noqa: E731
    txt = lambda t: t.narrow(token_axis, 0, text)  # noqa: E731
    for row in (batch + 1, batch + 2):
        assert torch.equal(img(out[row:row + 1]), img(x[batch:batch + 1]))
        assert torch.equal(txt(out[row:row + 1]), txt(x[row:row + 1]))
    assert torch.equal(out[:batch + 1], x[:batch + 1])  # the uncond chunk and the source row
    assert not torch.equal(out, x) and x.data_ptr() != out.data_ptr()


def test_without_conditional_chunks_the_tensor_is_returned_as_it_is():
    x = torch.randn(2, 6, 4)
    assert with_source_image_tokens(x, 1, 2, [(slice(0, 2), False)]) is x


def test_block_options_edit_only_inside_the_window_and_layer_on_the_previous_override():
    edit = QKEdit(t5_edit(), QKSettings(Window(0.0, 0.2)))
    previous = object()
    for step, edits in ((0, True), (1, True), (2, False), (9, False)):
        opts = {**sampling_options(step), "optimized_attention_override": previous}
        out = edit.block_options(opts, 4, 12)
        assert (out is not None) == edits, step
        if edits:
            override = out["optimized_attention_override"]
            assert isinstance(override, QKOverride) and override.previous is previous
            assert (override.text_length, override.joint_length) == (4, 12)
            assert opts["optimized_attention_override"] is previous  # the host's dict is not modified
    assert edit.block_options({"cond_or_uncond": [0]}, 4, 12) is None  # a call outside sampling


def test_single_blocks_use_the_text_length_of_the_double_blocks():
    edit = QKEdit(t5_edit(), QKSettings(Window(0.0, 1.0)))
    assert edit.block_options(sampling_options(0), None, 12) is None  # nothing known yet: no edit
    edit.block_options(sampling_options(0), 4, 12)
    assert edit.block_options(sampling_options(0), None, 12)["optimized_attention_override"].text_length == 4
    edit.reset()
    assert edit.block_options(sampling_options(0), None, 12) is None


def test_the_override_edits_the_joint_attention_and_leaves_an_image_only_attention_alone():
    edit = QKEdit(t5_edit(), QKSettings())
    seen = []
    override = QKOverride(edit, 2, 6, None)
    opts = sampling_options(0)
    q, k, v = torch.randn(2, 6, 4), torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    override(lambda *a, **kw: seen.append(a[:3]), q, k, v, 1, transformer_options=opts)
    assert torch.equal(seen[0][0][1, 2:], q[0, 2:]) and torch.equal(seen[0][1][1, 2:], k[0, 2:])
    assert torch.equal(seen[0][2], v)
    q_image = torch.randn(2, 4, 4)  # SD3.5's attn2: image tokens only
    override(lambda *a, **kw: seen.append(a[:3]), q_image, q_image, q_image, 1, transformer_options=opts)
    assert seen[1][0] is q_image


def test_a_batch_that_is_not_the_p2p_batch_is_refused():
    edit = QKEdit(t5_edit(targets=2), QKSettings())
    with pytest.raises(P2PInputError, match="3 .*1 source \\+ 2 edits"):
        edit.chunks(sampling_options(0), 2)


@pytest.mark.parametrize("kind,words,path,reweights,message", [
    ("reweight", "", "fast", (), "edit: 'reweight' is not available with mmdit_mechanism 'qk'"),
    ("refine", "", "fast", (), "edit: 'refine' is not available with mmdit_mechanism 'qk'"),
    ("replace", "dog=0.5", "fast", (), "word_windows: the qk mechanism edits no single words"),
    ("replace", "", "reference", (), "attention_path"),
    ("replace", "", "fast", (Reweight(("dog",), 2.0),), "P2P Reweight"),
])
def test_what_the_qk_edit_cannot_do_is_refused_naming_the_input(kind, words, path, reweights, message):
    edit = t5_edit(reweights=reweights)
    with pytest.raises(P2PInputError, match=message):
        check_mmdit_request(edit, kind, words, path)
    if path == "fast":  # the probabilities mechanism does all of these
        check_mmdit_request(edit, kind, words, path, "probabilities")
    blend = t5_edit(local_blend=LocalBlend((("cat",),), (("dog",),)))  # either mechanism blends
    check_mmdit_request(blend, "replace", " ", "fast")
    check_mmdit_request(blend, "refine", "", "fast", "probabilities")


def test_t5_prompts_are_edited_by_their_words():
    with pytest.raises(P2PInputError, match="reweight word 'dog' is not in any edited prompt"):
        t5_edit().with_reweight(Reweight(("dog",), 2.0))  # T5 prompts are reweighted by their words
    with pytest.raises(P2PInputError, match="local blend source word 'cat' is not in the source prompt"):
        t5_edit().with_local_blend(LocalBlend((("cat",),), ()))  # and blended by them
    assert issubclass(P2PInputError, PromptEditError)


def test_mmdit_blocks_names_blocks_by_kind_and_index_and_refuses_what_the_model_lacks():
    flux = [("double_block", i) for i in range(3)] + [("single_block", i) for i in range(4)]
    sd3 = [("double_block", i) for i in range(2)]
    assert select_blocks("all", flux) is None and select_blocks(" ", flux) is None
    assert select_blocks("double", flux) == frozenset(flux[:3])
    assert select_blocks("double 1-2, single 0", flux) == {("double_block", 1), ("double_block", 2), ("single_block", 0)}
    assert select_blocks("Joint 1", sd3) == {("double_block", 1)}
    for spec, message in (("single", "no single blocks"), ("double 2", "double blocks 0-1"), ("double 1-0", "0-1"),
                          ("triple", "not a block entry"), ("double x", "'x' is not a block index"), (",", "names no block")):
        with pytest.raises(P2PInputError, match=f"mmdit_blocks: .*{message}"):
            select_blocks(spec, sd3)


def test_blocks_outside_the_selection_only_record_and_records_see_the_prompts_own_queries():
    def words(*ws):
        return PromptTokens(" ".join(ws), ws, tuple(Word(w, (i,)) for i, w in enumerate(ws)), len(ws))

    worded = P2PEdit(words("a", "cat"), (words("a", "dog"),), encoder=T5_ENCODER)
    edit = QKEdit(worded, QKSettings(Window(0.0, 1.0), blocks=frozenset({("double_block", 0)})))
    assert not edit.edits_block(("double_block", 1)) and edit.edits_block(("double_block", 0))
    assert edit.block_options(sampling_options(0), 4, 12, edits=False, records=False) is None
    recording = edit.block_options(sampling_options(0), 4, 12, edits=False, records=True)
    override = recording["optimized_attention_override"]
    assert isinstance(override, MapRecordingOverride) and override.previous is None
    both = edit.block_options(sampling_options(0), 4, 12, edits=True, records=True)["optimized_attention_override"]
    assert isinstance(both, MapRecordingOverride) and isinstance(both.previous, QKOverride)


def test_composed_block_runs_the_previous_patch_with_the_changed_arguments():
    calls = []

    def previous(args, extra):
        calls.append(args["transformer_options"])
        return extra["original_block"](args)

    block = ComposedBlock("F", None, "double_block", 0, lambda kind, i, args: {**args, "transformer_options": {"x": 1}},
                          previous)
    out = block({"img": 1, "transformer_options": {}}, {"original_block": lambda args: ("ran", args["transformer_options"])})
    assert out == ("ran", {"x": 1}) and calls == [{"x": 1}]
    plain = ComposedBlock("F", None, "single_block", 0, lambda kind, i, args: None)
    assert plain({"img": 1}, {"original_block": lambda args: args}) == {"img": 1}
