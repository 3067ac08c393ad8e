"""Word maps of an MMDiT's joint attention (attention/mmdit_maps.py) and the local blend that uses
them, without ComfyUI: the one-hot-values read of the image→text probabilities is the softmax's."""

from __future__ import annotations

import pytest
import torch

from comfyui_prompt_edit.attention.edit_spec import T5_ENCODER, LocalBlend, P2PEdit
from comfyui_prompt_edit.attention.errors import P2PInputError
from comfyui_prompt_edit.attention.local_blend import blend_from_store
from comfyui_prompt_edit.attention.map_store import AttentionMapStore
from comfyui_prompt_edit.attention.mmdit_edit import QKEdit, QKSettings
from comfyui_prompt_edit.attention.mmdit_maps import (
    JOINT, MapRecordingOverride, MMDiTMapRecorder, image_text_probabilities, one_hot_values, recorded_columns)
from comfyui_prompt_edit.attention.step_window import Window
from comfyui_prompt_edit.attention.tokens import END, PAD, PromptTokens, Word

TEXT = 6  # columns of the prompts below: 4 words, </s>, one pad


def prompt(*words: str) -> PromptTokens:
    strings = (*words, END) + (PAD,) * (TEXT - len(words) - 1)
    return PromptTokens(" ".join(words), strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), TEXT)


def t5_edit(**kw) -> P2PEdit:
    return P2PEdit(prompt("a", "red", "cat", "sits"), (prompt("a", "red", "dog", "sits"),), encoder=T5_ENCODER, **kw)


def softmax_columns(q, k, columns, text_length, mask=None):
    """The reference: the whole joint softmax, then the image rows' text columns, head-averaged."""
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores + mask
    p = scores.softmax(-1)[:, :, text_length:]
    return p[..., list(columns)].mean(1)


def test_the_recorded_columns_are_every_prompts_words_and_end_token():
    assert recorded_columns(t5_edit()) == (0, 1, 2, 3, 4)


def test_one_hot_values_read_the_softmax_columns_through_the_fused_kernel():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, TEXT + 20, 8), torch.randn(2, 3, TEXT + 20, 8)
    columns = (0, 2, 4)
    values = one_hot_values(columns, TEXT, TEXT, TEXT + 20, q.device, q.dtype)
    torch.testing.assert_close(image_text_probabilities(q, k, values, TEXT), softmax_columns(q, k, columns, TEXT))
    mask = torch.randn(TEXT + 20, TEXT + 20)
    torch.testing.assert_close(image_text_probabilities(q, k, values, TEXT, mask),
                               softmax_columns(q, k, columns, TEXT, mask))


def test_a_context_the_host_repeated_sums_the_repeats_of_each_column():
    torch.manual_seed(1)
    length = 2 * TEXT + 10
    q, k = torch.randn(1, 2, length, 8), torch.randn(1, 2, length, 8)
    values = one_hot_values((1, 3), TEXT, 2 * TEXT, length, q.device, q.dtype)
    expected = softmax_columns(q, k, (1, 3), 2 * TEXT) + softmax_columns(q, k, (1 + TEXT, 3 + TEXT), 2 * TEXT)
    torch.testing.assert_close(image_text_probabilities(q, k, values, 2 * TEXT), expected)
    with pytest.raises(P2PInputError, match="not a multiple of the P2P prompts' 6 columns"):
        one_hot_values((1,), TEXT, TEXT + 1, length, q.device, q.dtype)


def sampling_options(step: int, steps: int = 10, chunks=(1, 0)) -> dict:
    schedule = torch.linspace(1.0, 0.0, steps + 1)
    return {"sigmas": schedule[step:step + 1], "sample_sigmas": schedule, "cond_or_uncond": list(chunks)}


@pytest.mark.parametrize("layout", ["flux", "sd3"])
def test_the_recorder_keeps_each_prompts_own_maps_of_the_conditional_chunk_before_the_edit(layout):
    torch.manual_seed(2)
    edit = QKEdit(t5_edit(), QKSettings(Window(0.0, 1.0)))
    edit.reset(grid=(3, 4))
    image = 12 + 2  # Flux Kontext appends reference-image tokens after the image's own
    heads, dim, length = 2, 8, TEXT + image
    q, k, v = (torch.randn(4, heads, length, dim) for _ in range(3))  # [uncond ×2, cond ×2]
    opts = edit.block_options(sampling_options(3), TEXT, length, edits=True, records=True)
    seen = []

    def host(*args, **kwargs):
        seen.append(args[0])
        return args[2]

    override = opts["optimized_attention_override"]
    if layout == "flux":
        override(host, q, k, v, heads, skip_reshape=True, transformer_options=opts)
    else:  # [B, L, H·D]
        flat = [x.transpose(1, 2).flatten(2) for x in (q, k, v)]
        override(host, *flat, heads, transformer_options=opts)
    maps = edit.store.per_step[(3, JOINT)]
    expected = softmax_columns(q[2:], k[2:], edit.store.columns, TEXT)[:, :12]
    torch.testing.assert_close(maps, expected)  # each prompt's own q and k, the edit's came after
    assert edit.store.spatial == (3, 4) and edit.store.num_steps == 10
    edited_q = seen[0] if layout == "flux" else seen[0].unflatten(2, (heads, dim)).transpose(1, 2)
    assert torch.equal(edited_q[3, :, TEXT:TEXT + 12], q[2, :, TEXT:TEXT + 12])  # and the edit ran on what the host got
    assert torch.equal(edited_q[3, :, TEXT + 12:], q[3, :, TEXT + 12:])  # on the image's tokens, not the references'
    override(host, q[:, :, TEXT:], k[:, :, TEXT:], v[:, :, TEXT:], heads, skip_reshape=True, transformer_options=opts)
    assert edit.store.layer_counts[(3, JOINT)] == 1  # an image-only attention records nothing


def test_local_blend_from_a_store_of_some_columns_is_the_blend_from_every_column():
    torch.manual_seed(3)
    blend = LocalBlend((("cat",),), (("dog",),), threshold=0.3, start=0.0)
    edit = t5_edit(local_blend=blend)
    recorder = MMDiTMapRecorder(edit)
    recorder.start_run((4, 4))
    full = AttentionMapStore()
    maps = torch.rand(2, 16, TEXT)
    recorder.store.add(0, JOINT, maps[..., list(recorder.store.columns)], (4, 4))
    full.add(0, JOINT, maps, (4, 4))
    selectors = QKEdit(edit, QKSettings()).selectors
    assert selectors[0].nonzero().flatten().tolist() == [2] == selectors[1].nonzero().flatten().tolist()
    x, denoised = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    schedule, sigma = torch.linspace(1.0, 0.0, 5), torch.tensor([0.75])
    blended = blend_from_store(blend, recorder.store, selectors, x, denoised, sigma, schedule, (1, 4))
    assert torch.equal(blended, blend_from_store(blend, full, selectors, x, denoised, sigma, schedule, (1, 4)))
    assert torch.equal(blended[0], denoised[0]) and not torch.equal(blended[1], denoised[1])


def test_the_recorder_records_nothing_outside_sampling_or_before_its_run_is_known():
    recorder = MMDiTMapRecorder(t5_edit())
    q = torch.randn(2, 2, TEXT + 4, 8)
    recorder.record(q, q, slice(0, 2), TEXT, 0, 4)  # no grid yet
    assert recorder.store.empty
    override = MapRecordingOverride(recorder, lambda opts, rows: None, (0, 4), TEXT, TEXT + 4, None)
    recorder.start_run((2, 2))
    assert override(lambda *a, **kw: "ran", q, q, q, 2, skip_reshape=True, transformer_options={}) == "ran"
    assert recorder.store.empty


def test_t5_tiles_are_labelled_without_sentencepieces_word_start():
    tokens = PromptTokens("a dog", ("▁", "a", "▁dog", END, PAD), (Word("a", (0, 1)), Word("dog", (2,))), 5)
    assert tokens.token_labels() == ["_", "a", "dog", END, PAD]
