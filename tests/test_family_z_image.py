"""Z-Image and Lumina 2 (NextDiT) through ComfyUI's stock sampling, with tiny random-weight models
(tests/harness/z_image_models.py): P2P Attention Control (qk and probabilities) through the
DIFFUSION_MODEL wrapper route, local blend, word maps, inversion and token-noise variations.
On a host without Z-Image (0.3.64), its tests check that the pack says which ComfyUI adds it."""

from __future__ import annotations

import functools

import pytest
import torch

from harness import edit_checks, z_image_models as zm
from harness.attention_capture import with_capture
from harness.inversion_runs import rel_err

pytestmark = pytest.mark.comfy

STEPS, SEED = 6, 7
LATENT = 12  # 6×6 = 36 image tokens: Z-Image pads them to 64, the caption's 7 columns to 32
FAMILIES = ["z_image", "lumina2"]
WORDS_SOURCE, WORDS_EDITED = ("a", "red", "cat", "sits", "here"), ("a", "red", "dog", "sits", "here")


def model_or_refusal(family: str):
    """The tiny model of ``family``; on a host without it, checks that the pack refuses the family
    naming the ComfyUI version that adds it, and returns None."""
    from comfyui_prompt_edit.families import UnsupportedModelError, family_by_id

    if family == "z_image" and not zm.has_z_image():
        with pytest.raises(UnsupportedModelError,
                           match=r"Z-Image models need ComfyUI 0\.3\.75 or newer; this ComfyUI has no ZImage model class"):
            family_by_id("z_image")
        return None
    assert family_by_id(family).id == family
    return zm.tiny_model(family)


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]()


def encoder(family: str) -> str:
    from comfyui_prompt_edit.attention.edit_spec import LUMINA2_ENCODER, Z_IMAGE_ENCODER

    return Z_IMAGE_ENCODER if family == "z_image" else LUMINA2_ENCODER


def prompt(words: tuple[str, ...], columns: int = 7):
    """Hand-made prompt columns (no text encoder): the words, an end token, then pads."""
    from comfyui_prompt_edit.attention.tokens import END, PAD, PromptTokens, Word

    strings = (*words, END) + (PAD,) * (columns - len(words) - 1)
    return PromptTokens(" ".join(words), strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), columns)


def word_edit(family: str, targets=(WORDS_EDITED,), columns: int = 7, **kw):
    from comfyui_prompt_edit.attention.edit_spec import P2PEdit

    return P2PEdit(prompt(WORDS_SOURCE, columns), tuple(prompt(t, columns) for t in targets), encoder=encoder(family),
                   **kw)


def text_edit(family: str, targets: int = 1):
    from comfyui_prompt_edit.attention.edit_spec import P2PEdit
    from comfyui_prompt_edit.attention.tokens import PromptTokens

    return P2PEdit(PromptTokens.text_only("source"), tuple(PromptTokens.text_only(f"edit {i}") for i in range(targets)),
                   encoder=encoder(family))


def latent(batch: int, size: int = LATENT) -> dict:
    return {"samples": torch.zeros(batch, zm.NEXTDIT_LATENT_CHANNELS, size, size), "batch_index": [0] * batch}


def negative(tokens: int = 7):
    return zm.random_conditioning(tokens=tokens, seed=99)


def sample(model, positive, latent_image, cfg=2.5, neg=None, steps=STEPS):
    import comfy.sample

    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive,
                                   negative() if neg is None else neg, samples, seed=SEED, disable_pbar=True)


def control(model, edit, qk_end=0.5, kind="replace", mechanism="qk", **kw):
    return node("PromptEditP2PAttentionControl").apply(model, edit, kind, 0.0, 0.8, 0.4, "coarse", qk_end=qk_end,
                                                       mmdit_mechanism=mechanism, **kw)


assert_same = functools.partial(edit_checks.assert_same, tol=5e-5)  # fp32 rounding of a batch of 3 vs 1 at dim 256: 1e-5


def moved(a, b) -> float:
    return rel_err(a, b)




# -- the rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_is_recognised_by_its_config_and_takes_its_own_encoders_prompts(family):
    from comfyui_prompt_edit.attention.edit_spec import T5_ENCODER
    from comfyui_prompt_edit.attention.errors import P2PInputError
    from comfyui_prompt_edit.families import MODEL_WRAPPER, family_of

    model = model_or_refusal(family)
    if model is None:
        return
    row = family_of(model)
    assert row.id == family and row.route == MODEL_WRAPPER and row.real_cfg(model)
    assert [k for k, _ in row.block_keys(model)] == ["double_block", "double_block"]
    other = "Lumina 2's Gemma 2" if family == "z_image" else "Z-Image's Qwen3"
    with pytest.raises(P2PInputError, match=f"reads {'Z-Image' if family == 'z_image' else 'Lumina 2'}"):
        row.check_prompts(T5_ENCODER)
    with pytest.raises(P2PInputError, match=f"encoded by {other}"):
        row.check_prompts(encoder("lumina2" if family == "z_image" else "z_image"))


# -- the qk edit -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_equal_prompts_give_the_source_and_the_source_is_plain_sampling(family):
    model = model_or_refusal(family)
    if model is None:
        return
    patched, _ = control(model, text_edit(family, targets=2), qk_end=1.0)
    edited = sample(patched, zm.batch_conditioning([1, 1, 1]), latent(3))
    assert_same(edited[1], edited[0])
    assert_same(edited[2], edited[0])
    assert_same(edited[0], sample(model, zm.batch_conditioning([1]), latent(1))[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_the_refiners_are_untouched_and_the_joint_layers_get_the_source_image_queries(family):
    """T = 7, 16 image tokens: Z-Image's refiners attend over 32 and 32 tokens, its joint layers
    over 64 (Lumina 2: 7, 16, 23). Only the joint calls of the conditional rows change."""
    model = model_or_refusal(family)
    if model is None:
        return
    text, image = (32, 32) if family == "z_image" else (7, 16)
    plain_model, plain = with_capture(model)
    edited_model, edited = with_capture(model)
    positive = zm.batch_conditioning([1, 2])
    sample(plain_model, positive, latent(2, size=8), steps=2)
    sample(control(edited_model, text_edit(family), qk_end=1.0)[0], positive, latent(2, size=8), steps=2)
    lengths = [call.length for call in edited.calls]
    assert lengths == [call.length for call in plain.calls]
    assert lengths[:4] == [text, image, text + image, text + image]  # context refiner, noise refiner, 2 layers
    first = [(p, e) for p, e in zip(plain.calls, edited.calls) if p[0] == 0]  # step 0: the same inputs
    joint = 0
    for (_, _, _, q0, k0), (_, chunks, _, q1, k1) in first:
        if q0.shape[2] != text + image:
            assert torch.equal(q1, q0) and torch.equal(k1, k0)  # refiners: as without the edit
            continue
        for chunk, kind in enumerate(chunks):
            rows = slice(2 * chunk, 2 * chunk + 2)
            for x, x0 in ((q1[rows], q0[rows]), (k1[rows], k0[rows])):  # [B, H, L, D]
                if kind == 0:  # the edit: the source's image tokens, its own text
                    assert torch.equal(x[1, :, text:text + 16], x[0, :, text:text + 16])  # the 4 × 4 image
                    # Z-Image's image pads after them, as reference tokens elsewhere, stay the row's own
                    assert not torch.equal(x[1, :, :text], x[0, :, :text])
                    joint += not torch.equal(x[1], x0[1])  # layer 0's image tokens were alike already
                else:
                    assert torch.equal(x, x0)
    assert joint == 2  # q and k of layer 1's conditional chunk


@pytest.mark.parametrize("family", FAMILIES)
def test_the_edit_moves_the_edited_item_and_local_blend_confines_it(family, monkeypatch):
    from comfyui_prompt_edit.attention import local_blend
    from comfyui_prompt_edit.attention.edit_spec import LocalBlend

    model = model_or_refusal(family)
    if model is None:
        return
    positive = zm.batch_conditioning([1, 2])
    plain = sample(model, positive, latent(2))
    edited = sample(control(model, word_edit(family), qk_end=0.5)[0], positive, latent(2))
    assert_same(edited[0], plain[0])
    move = moved(edited[1], plain[1])
    print(f"\n{family}: qk edit moves the edited item by {move:.3g} (relative)")
    assert move > 1e-2  # 200× the identity's tolerance (5e-5)
    # local blend: the mask from the recorded maps, swapped for the left half (tiny random maps
    # threshold to all or nothing); outside it the edited item must come out as the source
    half = torch.zeros(1, 1, LATENT, LATENT)
    half[..., : LATENT // 2] = 1
    masks = []
    real_mask = local_blend.blend_mask

    def left_half(maps, selectors, latent_hw, threshold):
        masks.append(real_mask(maps, selectors, latent_hw, threshold))
        return half

    monkeypatch.setattr(local_blend, "blend_mask", left_half)
    blend = LocalBlend((("cat",),), (("dog",),), threshold=0.3, start=0.0)
    patched, handle = control(model, word_edit(family, local_blend=blend), qk_end=0.5)
    out = sample(patched, positive, latent(2))
    assert len(masks) == STEPS and masks[-1].shape == (1, 1, LATENT, LATENT)
    assert handle.store.spatial == (LATENT // 2, LATENT // 2)
    assert torch.equal(out[0], edited[0])
    assert float((out[1] - out[0])[..., LATENT // 2:].abs().max()) == 0.0
    assert moved(out[1][..., : LATENT // 2], out[0][..., : LATENT // 2]) > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_maps_come_from_every_joint_layer_and_the_image_tokens_only(family):
    model = model_or_refusal(family)
    if model is None:
        return
    edit = word_edit(family)
    patched, handle = control(model, edit, qk_end=0.5)
    sample(patched, zm.batch_conditioning([1, 2]), latent(2))
    store = handle.store
    grid = (LATENT // 2, LATENT // 2)  # 36 image tokens; Z-Image's pad tail (28 tokens) is not drawn
    assert store.spatial == grid and store.columns == tuple(range(6))  # 5 words and the end token
    assert {store.layer_counts[key] for key in store.per_step} == {2}  # both joint layers, every step
    assert len(store.per_step) == STEPS
    maps = store.average(("joint",))
    assert maps.shape == (2, *grid, 6) and bool(torch.isfinite(maps).all())
    assert float(maps.sum(-1).max()) < 1.0  # probabilities of some text columns, the image's share besides
    assert not torch.allclose(maps[1], maps[0])
    (image,) = node("PromptEditP2PAttentionMaps").render(handle, latent(2), 1, "input+output", 0.0, 1.0, False, 32, 8)
    assert image.shape[0] == 1 and bool(torch.isfinite(image).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_mmdit_blocks_chooses_the_layers_the_edit_runs_in(family):
    model = model_or_refusal(family)
    if model is None:
        return
    positive, edit = zm.batch_conditioning([1, 2]), word_edit(family)
    every = sample(control(model, edit, mmdit_blocks="all")[0], positive, latent(2))
    listed = sample(control(model, edit, mmdit_blocks="double 0-1")[0], positive, latent(2))
    assert torch.equal(every, listed)
    first = sample(control(model, edit, mmdit_blocks="joint 0")[0], positive, latent(2))
    plain = sample(model, positive, latent(2))
    assert torch.equal(first[0], plain[0])
    assert moved(first[1], every[1]) > 1e-4 and moved(first[1], plain[1]) > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_cond_and_uncond_of_different_text_lengths_give_the_source_as_plain_sampling(family):
    """11 and 8 columns cannot share a batch (ComfyUI runs them as separate calls); each call's
    layout is its own."""
    model = model_or_refusal(family)
    if model is None:
        return
    edit = word_edit(family, columns=11)
    positive, neg = zm.batch_conditioning([1, 2], tokens=11), negative(tokens=8)
    for mechanism in ("qk", "probabilities"):
        captured, capture = with_capture(model)
        edited = sample(control(captured, edit, qk_end=1.0, mechanism=mechanism)[0], positive, latent(2), neg=neg)
        assert {call.cond_or_uncond for call in capture.calls} == {(0,), (1,)}  # one chunk per call
        plain = sample(model, positive, latent(2), neg=neg)
        assert_same(edited[0], plain[0])
        assert moved(edited[1], plain[1]) > 1e-3, mechanism


def test_a_second_p2p_on_the_same_model_is_refused():
    from comfyui_prompt_edit.patching.comfy_model import PatchConflictError

    model = zm.tiny_lumina2_model()
    patched, _ = control(model, word_edit("lumina2"))
    with pytest.raises(PatchConflictError, match="already went through P2P Attention Control"):
        control(patched, word_edit("lumina2"))
    from comfyui_prompt_edit.families.joint.install import WRAPPER_KEY
    import comfy.patcher_extension

    later = patched.clone()
    later.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    with pytest.raises(PatchConflictError, match="removed its model wrapper"):
        sample(later, zm.batch_conditioning([1, 2]), latent(2))


# -- the probabilities mechanism -----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["replace", "refine", "reweight"])
def test_the_probabilities_mechanism_moves_the_edited_item(family, kind):
    from comfyui_prompt_edit.attention.edit_spec import Reweight

    model = model_or_refusal(family)
    if model is None:
        return
    if kind == "replace":
        edit, rows = word_edit(family), [1, 2]
    elif kind == "refine":
        edit, rows = word_edit(family, targets=(("a", "red", "fat", "cat", "sits"),)), [1, 2]
    else:
        edit, rows = word_edit(family, targets=(WORDS_SOURCE,)).with_reweight(Reweight(("cat",), 4.0)), [1, 1]
    positive = zm.batch_conditioning(rows)
    plain = sample(model, positive, latent(2))
    edited = sample(control(model, edit, kind=kind, mechanism="probabilities")[0], positive, latent(2))
    assert_same(edited[0], plain[0])
    move = moved(edited[1], plain[1])
    print(f"\n{family} probabilities {kind}: edited item moves by {move:.3g}")
    assert move > 1e-3


# -- inversion -------------------------------------------------------------------------------------


def photo_latent(seed: int = 5) -> torch.Tensor:
    return torch.randn(1, zm.NEXTDIT_LATENT_CHANNELS, LATENT, LATENT, generator=torch.Generator().manual_seed(seed))


def invert(model, method, cfg, inner_steps=0):
    positive, neg = zm.random_conditioning(seed=1), negative()
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(model, positive, neg, {"samples": photo_latent()},
                                                               method, "simple", STEPS, cfg, inner_steps, 1e-5)
    return positive, neg, noisy, inversion


def reconstruct(model, positive, neg, noisy, inversion, cfg):
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    with torch.inference_mode():
        return node("KSamplerAdvanced").sample(patched, "disable", 0, STEPS, cfg, "euler", "simple", positive, neg,
                                               noisy, 0, 10000, "disable")[0]["samples"]


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_inversion_is_exact_and_null_text_fast_beats_ddim(family):
    model = model_or_refusal(family)
    if model is None:
        return
    cfg = 2.5
    errors = {}
    for method in ("direct", "ddim", "null-text fast"):
        positive, neg, noisy, inversion = invert(model, method, cfg)
        errors[method] = rel_err(reconstruct(model, positive, neg, noisy, inversion, cfg), photo_latent())
    print(f"\n{family} inversion errors at cfg {cfg}: {errors}")
    assert errors["direct"] < 1e-4
    assert errors["null-text fast"] < errors["ddim"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_photo_is_edited_after_direct_inversion_and_its_source_reconstructs(family):
    """Invert Image (direct, the source prompt) -> P2P Attention Control -> Apply Inversion ->
    KSamplerAdvanced: the source item gives the photo back with the edit on, the edit moves."""
    model = model_or_refusal(family)
    if model is None:
        return
    cfg, photo = 2.5, photo_latent()
    positive, neg = zm.batch_conditioning([1, 2]), negative()
    source = [[positive[0][0][:1], positive[0][1]]]
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(model, source, neg, {"samples": photo}, "direct",
                                                               "simple", STEPS, cfg, 0, 1e-5)
    both = {"samples": noisy["samples"].repeat(2, 1, 1, 1)}
    runs = [reconstruct(m, positive, neg, both, inversion, cfg)
            for m in (control(model, word_edit(family), qk_end=1.0)[0], model)]
    for out in runs:
        assert rel_err(out[:1], photo) < 1e-4
    assert rel_err(runs[0][1:], runs[1][1:]) > 1e-3  # the qk edit acted on the edited item


# -- token-noise variations ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_token_noise_varies_the_edited_words_and_the_edit_samples_them(family):
    model = model_or_refusal(family)
    if model is None:
        return
    edit, positive = word_edit(family), zm.batch_conditioning([1, 2])
    _, varied, batch, varied_edit = node("PromptEditStochasticEmbeddings").vary(
        model, positive, latent(1), "token noise", 2, 0, 0.5, "", edit)
    cond = varied[0][0]
    changed = (cond != positive[0][0][[0, 1, 1]]).any(-1)
    assert not changed[0].any() and changed[1].nonzero().flatten().tolist() == [2] == changed[2].nonzero().flatten().tolist()
    out = sample(control(model, varied_edit)[0], varied, batch)
    plain = sample(model, zm.batch_conditioning([1]), latent(1))
    assert_same(out[0], plain[0])
    assert moved(out[1], out[2]) > 1e-3
