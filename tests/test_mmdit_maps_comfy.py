"""Word maps, local blend, per-word windows and block choice of P2P on Flux and SD3, through
ComfyUI's stock sampling with the tiny models and their tiny T5 text encoders."""

from __future__ import annotations

import pytest
import torch

from harness import comfyui, mmdit_models
from harness.edit_checks import MIN_EDIT_CHANGE, assert_edit_moves, assert_same, relative_change

pytestmark = pytest.mark.comfy

STEPS, SEED, LATENT = 6, 7, 16
SOURCE, EDITED = "a photo of a cat riding a bicycle", "a photo of a dog riding a bicycle"


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[f"PromptEdit{name}"]()


def latent(batch: int) -> dict:
    return {"samples": torch.zeros(batch, mmdit_models.MMDIT_LATENT_CHANNELS, LATENT, LATENT), "batch_index": [0] * batch}


def sample(model, positive, latent_image, negative, cfg=2.0):
    import comfy.sample

    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, STEPS, cfg, "euler", "simple", positive, negative, samples,
                                   seed=SEED, disable_pbar=True)


def control(model, edit, mechanism="qk", kind="replace", **kw):
    return node("P2PAttentionControl").apply(model, edit, kind, 0.0, 0.8, 0.4, "coarse", qk_end=0.5,
                                             mmdit_mechanism=mechanism, **kw)


def prompts(clip, edited=EDITED):
    return node("P2PPrompts").build(clip, latent(1), SOURCE, edited)


@pytest.mark.parametrize("which", ["flux", "sd3"])
@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
def test_local_blend_keeps_the_source_outside_the_words_region(which, mechanism, mmdit_families, monkeypatch):
    from comfyui_prompt_edit.attention import local_blend

    model, clip = mmdit_families[which]
    positive, batch, edit = prompts(clip)
    (blended,) = node("P2PLocalBlend").blend(edit, clip, "cat", "dog", 0.3, 0.0)
    patched, handle = control(model, blended, mechanism)
    # The tiny models attend sharply (q/k norm weights 3): the words' normalised maps span 0 … 1,
    # so threshold 0.3 masks a region (measured: 33 … 70 % of the image), not all or nothing as
    # the old near-uniform attention did. Each step's mask is recorded as the pack computes it.
    masks = []
    real_mask = local_blend.blend_mask

    def recorded(maps, selectors, latent_hw, threshold):
        masks.append((maps.clone(), selectors, real_mask(maps, selectors, latent_hw, threshold)))
        return masks[-1][2]

    monkeypatch.setattr(local_blend, "blend_mask", recorded)
    out = sample(patched, positive, batch, comfyui.encode(clip, ""))
    store = handle.store
    assert store.spatial == (LATENT // 2, LATENT // 2) and len({s for s, _ in store.per_step}) == STEPS
    assert len(masks) == STEPS
    maps, selectors, mask = masks[-1]  # the last step's, from every step's maps
    assert torch.equal(maps, store.running.unflatten(1, store.spatial))
    assert torch.equal(selectors, handle.selectors[:, list(store.columns)]) and mask.shape == (1, 1, LATENT, LATENT)
    cat, dog = edit.source.find(("cat",)), edit.targets[0].find(("dog",))
    assert selectors.sum(1).tolist() == [sum(map(len, cat)), sum(map(len, dog))]
    inside = mask[0, 0].bool()
    assert 0.1 < float(inside.float().mean()) < 0.9, "the words' region is neither empty nor the whole image"
    # σ_next = 0 at the last step: the result is the blended prediction, the source's outside (to
    # the rounding of euler's x + (denoised - x): the masks of earlier steps differ, so x does too)
    assert_same(out[1][:, ~inside], out[0][:, ~inside])
    unblended = sample(control(model, edit, mechanism)[0], positive, batch, comfyui.encode(clip, ""))
    # inside, the edit's own (the unblended edit moves it by well over roundoff)
    assert relative_change(out[1][:, inside], out[0][:, inside]) > MIN_EDIT_CHANGE
    assert torch.equal(out[0], unblended[0]) and relative_change(out[1], unblended[1]) > MIN_EDIT_CHANGE


@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_the_maps_node_draws_every_word_and_the_source_maps_are_the_plain_runs(which, mmdit_families):
    model, clip = mmdit_families[which]
    positive, batch, edit = prompts(clip)
    negative = comfyui.encode(clip, "")
    handles = []
    for mechanism in ("qk", "probabilities"):
        patched, handle = control(model, edit, mechanism)
        sample(patched, positive, batch, negative)
        handles.append(handle)
    words = [c for w in edit.targets[0].words for c in w.columns]
    t5_words = 11  # "▁", "a" are two T5 tokens; SD3 adds each word's CLIP column
    assert len(words) == (t5_words if which == "flux" else t5_words + 8)
    (grid,) = node("P2PAttentionMaps").render(handles[0], batch, 1, "input+output", 0.0, 1.0, False, 32, 8)
    assert grid.shape == (1, -(-len(words) // 8) * (32 + 20), 8 * 32, 3)
    column_of = [node("P2PAttentionMaps").render(handles[0], batch, 1, "input+output", 0.0, 1.0, special, 32, 1)[0]
                 for special in (False, True)]
    assert column_of[1].shape[1] > column_of[0].shape[1]  # T5's </s>, SD3's CLIP start / end tokens
    # item 0 is the source in both runs, sampled as it is, so its maps are the same
    source_maps = [h.store.average(("joint",))[0] for h in handles]
    torch.testing.assert_close(source_maps[0], source_maps[1])
    assert not torch.allclose(handles[0].store.average(("joint",))[1], source_maps[0])


def test_per_word_windows_set_a_words_steps_with_the_probabilities_mechanism(mmdit_families, monkeypatch):
    from comfyui_prompt_edit.attention import mmdit_probabilities

    model, clip = mmdit_families["flux"]
    positive, batch, edit = prompts(clip)
    dog = edit.targets[0].find(("dog",))[0][0]
    seen = []
    original = mmdit_probabilities.edited_probabilities

    def recording(p_source, p_edit, text_length, mapper, c_src, c_own):
        seen.append(c_src.clone())
        return original(p_source, p_edit, text_length, mapper, c_src, c_own)

    monkeypatch.setattr(mmdit_probabilities, "edited_probabilities", recording)
    sample(control(model, edit, "probabilities", word_windows="dog=0.0-0.0", clip=clip)[0], positive, batch,
           comfyui.encode(clip, ""))
    assert seen and all(float(c[dog]) == 0.0 and float(c[dog - 1]) == 1.0 for c in seen)


def test_mmdit_blocks_chooses_the_blocks_the_edit_runs_in(mmdit_families):
    model, clip = mmdit_families["flux"]  # one double and two single blocks
    positive, batch, edit = prompts(clip)
    negative = comfyui.encode(clip, "")
    every = sample(control(model, edit, mmdit_blocks="all")[0], positive, batch, negative)
    listed = sample(control(model, edit, mmdit_blocks="double 0, single 0-1")[0], positive, batch, negative)
    assert torch.equal(every, listed)
    double = sample(control(model, edit, mmdit_blocks="double")[0], positive, batch, negative)
    plain = sample(model, positive, batch, negative)
    assert relative_change(double[1], every[1]) > MIN_EDIT_CHANGE  # the single blocks' edit is left out
    assert_edit_moves(double, plain)  # the double block's edit moves the edited item; the source is plain
    assert torch.equal(double[0], plain[0])
