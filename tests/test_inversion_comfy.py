"""Real-image inversion through ComfyUI's nodes and stock samplers."""

from __future__ import annotations

import pytest
import torch

from harness import comfyui, tiny_models
from harness.inversion_runs import STEPS, invert, node, reconstruct, rel_err

pytestmark = pytest.mark.comfy


@pytest.fixture
def random_photo(tiny_sd15, tiny_sd15_clip):
    """A random-weight model: enough for plumbing, schedules and errors (not for quality)."""
    return tiny_sd15, tiny_sd15_clip, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), "a red square"


def test_step_k_gets_embedding_k(random_photo):
    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "null-text fast", prompt=caption, inner_steps=2)
    inversion.unconds = torch.randn_like(inversion.unconds)  # distinct per step, to see which one arrives
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    seen = {}

    def recorder(n, context, value, extra_options):
        chunks = extra_options["cond_or_uncond"]
        size = context.shape[0] // len(chunks)
        step = len([s for s in extra_options["sample_sigmas"] if float(s) > float(extra_options["sigmas"][0]) * (1 + 1e-4)])
        for i, chunk in enumerate(chunks):
            if chunk == 1:
                seen.setdefault(step, context[i * size].clone())
        return n, context, value

    patched.set_model_attn2_patch(recorder)  # runs after the inversion's patch
    with torch.inference_mode():
        node("KSamplerAdvanced").sample(patched, "disable", 0, STEPS, 7.5, "euler", "ddim_uniform", positive, negative,
                                        noisy, 0, 10000, "disable")
    assert sorted(seen) == list(range(STEPS))
    for k, context in seen.items():
        torch.testing.assert_close(context.float(), inversion.unconds[k])


@pytest.mark.parametrize("change,message", [
    ({"sampler": "dpmpp_2m"}, "only with the deterministic 'euler' or 'ddim'"),
    ({"steps": STEPS + 2}, "not the inversion's schedule"),
    ({"add_noise": "enable"}, "add_noise 'disable'"),
])
@pytest.mark.parametrize("method", ["negative-prompt", "direct"])
def test_a_sampler_that_cannot_reconstruct_is_refused_before_sampling(random_photo, change, message, method):
    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, method, prompt=caption)
    with pytest.raises(ValueError, match=message):
        reconstruct(model, positive, negative, noisy, inversion, **change)


def test_save_load_round_trip_and_foreign_model(random_photo, tmp_path):
    import folder_paths

    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "null-text fast", prompt=caption, inner_steps=2)
    folder_paths.add_model_folder_path("inversions", str(tmp_path), is_default=True)
    saved = node("PromptEditSaveInversion").save(inversion, "photo")["ui"]["text"][0]
    assert (tmp_path / saved).is_file()
    loaded_latent, loaded = node("PromptEditLoadInversion").load(saved)
    assert torch.equal(loaded.unconds, inversion.unconds) and torch.equal(loaded_latent["samples"], noisy["samples"])
    torch.testing.assert_close(reconstruct(model, positive, negative, loaded_latent, loaded),
                               reconstruct(model, positive, negative, noisy, inversion))
    with pytest.raises(ValueError, match="made with another model"):
        node("PromptEditApplyInversion").apply(tiny_models.tiny_sd15_model(seed=1), loaded)


def test_guidance_of_one_is_refused_for_null_text(random_photo):
    model, clip, latent, caption = random_photo
    with pytest.raises(ValueError, match="guidance"):
        invert(model, clip, latent, "null-text", guidance=1.0, prompt=caption)


def test_p2p_source_branch_reconstructs_the_photo(random_photo):
    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "null-text fast", prompt=caption)
    alone = reconstruct(model, positive, negative, noisy, inversion)
    words = caption.split()
    edited = " ".join(words[:-1] + ["circle" if words[-1] != "circle" else "square"])
    p2p_positive, p2p_latent, edit = node("PromptEditP2PPrompts").build(clip, noisy, caption, edited)
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    patched = node("PromptEditP2PAttentionControl").apply(patched, edit, "replace", 0.0, 0.8, 0.4, "coarse")[0]
    with torch.inference_mode():
        out = node("KSamplerAdvanced").sample(patched, "disable", 0, STEPS, 7.5, "euler", "ddim_uniform", p2p_positive,
                                              negative, p2p_latent, 0, 10000, "disable")[0]["samples"]
    # a random-weight model amplifies float rounding of the batched run; 1 % of the range still
    # tells a reconstruction from an edit
    torch.testing.assert_close(out[:1], alone, atol=1e-2 * float(alone.abs().max()), rtol=1e-2)
    assert rel_err(out[1:], alone) > 1e-3


@pytest.mark.parametrize("family", ["sd2v", "sdxl"])
def test_other_model_families_invert_and_sample(family, request):
    model = request.getfixturevalue(f"tiny_{family}")
    clip = request.getfixturevalue("tiny_sd2_clip" if family == "sd2v" else "tiny_sdxl_clip")
    latent = torch.randn(1, 4, 8, 8)
    positive, negative, noisy, inversion = invert(model, clip, latent, "null-text fast", inner_steps=1, prompt="a photo")
    out = reconstruct(model, positive, negative, noisy, inversion)
    assert out.shape == latent.shape and torch.isfinite(out).all()


def test_cancel_stops_the_inversion(tiny_sd15, tiny_sd15_clip):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            invert(tiny_sd15, tiny_sd15_clip, torch.randn(1, 4, 8, 8), "null-text", inner_steps=5)
    finally:
        mm.interrupt_current_processing(False)


def test_latent_batch_must_be_one_image(tiny_sd15, tiny_sd15_clip):
    with pytest.raises(ValueError, match="invert one image at a time"):
        invert(tiny_sd15, tiny_sd15_clip, torch.randn(2, 4, 8, 8), "ddim")


def test_an_image_is_encoded_with_the_vae(tiny_sd15, tiny_sd15_clip, tiny_vae):
    image = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(0))
    positive, negative = comfyui.encode(tiny_sd15_clip, "a photo"), comfyui.encode(tiny_sd15_clip, "")
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(tiny_sd15, positive, negative, image=image, vae=tiny_vae,
                                                               method="ddim", steps=3)
        encoded = tiny_vae.encode(image)
    assert noisy["samples"].shape == (1, 4, 8, 6)
    torch.testing.assert_close(inversion.source, encoded.float())


@pytest.mark.parametrize("inputs,message", [
    ({"image": torch.rand(1, 60, 64, 3)}, "image: its size 64x60 is not a multiple of 8"),
    ({"image": torch.rand(1, 64, 64, 3), "vae": None}, "vae: connect the VAE"),
    ({}, "connect either a latent .* not neither"),
    ({"image": torch.rand(1, 64, 64, 3), "latent": {"samples": torch.zeros(1, 4, 8, 8)}}, "not both"),
])
def test_bad_photo_inputs_are_named(tiny_sd15, tiny_sd15_clip, tiny_vae, inputs, message):
    inputs = {"vae": tiny_vae, **inputs}
    positive, negative = comfyui.encode(tiny_sd15_clip, "a photo"), comfyui.encode(tiny_sd15_clip, "")
    with pytest.raises(ValueError, match=message), torch.inference_mode():
        node("PromptEditInvertImage").invert(tiny_sd15, positive, negative, method="ddim", steps=3, **inputs)


# ------------------------------------------------------------------------------------------------
# Direct inversion: the source item is put back on the pivots at every step


@pytest.mark.parametrize("family", ["sd15", "sd2v", "sdxl"])
def test_direct_inversion_reconstructs_exactly_at_cfg_7_5(family, request):
    model = request.getfixturevalue(f"tiny_{family}")
    clip = request.getfixturevalue({"sd15": "tiny_sd15_clip", "sd2v": "tiny_sd2_clip", "sdxl": "tiny_sdxl_clip"}[family])
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    positive, negative, noisy, inversion = invert(model, clip, latent, "direct", prompt="a photo of a cat")
    assert rel_err(reconstruct(model, positive, negative, noisy, inversion, cfg=7.5), latent) < 1e-4
    # the same inversion without the correction drifts: the correction is what makes it exact
    plain = node("KSamplerAdvanced").sample
    with torch.inference_mode():
        drifted = plain(model, "disable", 0, STEPS, 7.5, "euler", "ddim_uniform", positive, negative, noisy, 0, 10000,
                        "disable")[0]["samples"]
    assert rel_err(drifted, latent) > 1e-2


def _p2p_edit(model, clip, inversion, noisy, caption, edited, kind, correct_edits=False):
    p2p_positive, p2p_latent, edit = node("PromptEditP2PPrompts").build(clip, noisy, caption, edited)
    if kind == "reweight":
        edit = node("PromptEditP2PReweight").reweight(edit, clip, "red", 3.0)[0]
    edit = node("PromptEditP2PLocalBlend").blend(edit, clip, "square", "circle" if kind != "reweight" else "red", 0.3, 0.2)[0]
    patched = node("PromptEditApplyInversion").apply(model, inversion, correct_edits)[0]
    patched = node("PromptEditP2PAttentionControl").apply(patched, edit, kind, 0.0, 0.8, 0.4, "coarse")[0]
    return patched, p2p_positive, p2p_latent


def _sample_advanced(model, positive, negative, latent, cfg=7.5):
    with torch.inference_mode():
        return node("KSamplerAdvanced").sample(model, "disable", 0, STEPS, cfg, "euler", "ddim_uniform", positive,
                                               negative, latent, 0, 10000, "disable")[0]["samples"]


@pytest.mark.parametrize("kind,edited", [("replace", "a red circle"), ("refine", "a big red circle"),
                                         ("reweight", "a red square")])
def test_direct_inversion_keeps_the_source_item_exact_under_every_edit_kind(random_photo, kind, edited):
    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "direct", prompt=caption)
    patched, p2p_positive, p2p_latent = _p2p_edit(model, clip, inversion, noisy, caption, edited, kind)
    out = _sample_advanced(patched, p2p_positive, negative, p2p_latent)
    assert rel_err(out[:1], latent) < 1e-4
    assert rel_err(out[1:], latent) > 1e-3


def test_correct_edits_changes_only_the_edited_items(random_photo):
    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "direct", prompt=caption)
    runs = []
    for correct in (False, True):
        patched, p2p_positive, p2p_latent = _p2p_edit(model, clip, inversion, noisy, caption, "a red circle", "replace", correct)
        runs.append(_sample_advanced(patched, p2p_positive, negative, p2p_latent))
    assert rel_err(runs[0][:1], latent) < 1e-4 and rel_err(runs[1][:1], latent) < 1e-4
    assert rel_err(runs[1][1:], runs[0][1:]) > 1e-3


def test_direct_inversion_keeps_the_source_exact_under_token_noise_variations(random_photo):
    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "direct", prompt=caption)
    p2p_positive, p2p_latent, edit = node("PromptEditP2PPrompts").build(clip, noisy, caption, "a red circle")
    base, varied_positive, varied_latent, varied_edit = node("PromptEditStochasticEmbeddings").vary(
        model, p2p_positive, p2p_latent, "token noise", 2, 5, 0.3, "circle", edit)
    patched = node("PromptEditApplyInversion").apply(base, inversion)[0]
    patched = node("PromptEditP2PAttentionControl").apply(patched, varied_edit, "replace", 0.0, 0.8, 0.4, "coarse")[0]
    out = _sample_advanced(patched, varied_positive, negative, varied_latent)
    assert out.shape[0] == 3 and rel_err(out[:1], latent) < 1e-4
    assert rel_err(out[1:2], out[2:3]) > 1e-3


def test_a_direct_inversion_saves_and_loads_with_its_pivots(random_photo, tmp_path):
    from comfyui_prompt_edit.inversion.result import Inversion, InversionFileError
    from comfyui_prompt_edit.base.safetensors_io import write_safetensors

    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "direct", prompt=caption)
    inversion.save(tmp_path / "direct.safetensors")
    loaded = Inversion.load(tmp_path / "direct.safetensors")
    assert torch.equal(loaded.pivots, inversion.pivots) and loaded.method == "direct"
    assert rel_err(reconstruct(model, positive, negative, noisy, loaded), latent) < 1e-4
    tensors = {"unconds": inversion.unconds, "sigmas": inversion.sigmas, "noisy": inversion.noisy, "source": inversion.source}
    meta = {"format": "comfyui-prompt-edit/inversion/v1", "guidance": "7.5", "method": "direct", "scheduler": "ddim_uniform",
            "steps": str(STEPS), "model_fingerprint": inversion.model_fingerprint}
    write_safetensors(tensors, tmp_path / "no_pivots.safetensors", meta)
    with pytest.raises(InversionFileError, match=r"lacks \['pivots'\]; save the inversion again"):
        Inversion.load(tmp_path / "no_pivots.safetensors")


def test_direct_inversion_keeps_the_source_exact_under_conditional_vae_variations(random_photo):
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    model, clip, latent, caption = random_photo
    positive, negative, noisy, inversion = invert(model, clip, latent, "direct", prompt=caption)
    torch.manual_seed(0)
    vae = EmbeddingVAE(EmbeddingVAEConfig("token_mlp", 77, 32, latent=4, hidden=16))
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))  # an untrained VAE is the identity; this one varies
    conditional = TrainedEmbeddingVAE(vae.requires_grad_(False), "conditional")
    p2p_positive, p2p_latent, edit = node("PromptEditP2PPrompts").build(clip, noisy, caption, "a red circle")
    base, varied_positive, varied_latent, varied_edit = node("PromptEditStochasticEmbeddings").vary(
        model, p2p_positive, p2p_latent, "embedding VAE", 2, 5, 1.0, "", edit, embedding_vae=conditional)
    patched = node("PromptEditApplyInversion").apply(base, inversion)[0]
    patched = node("PromptEditP2PAttentionControl").apply(patched, varied_edit, "replace", 0.0, 0.8, 0.4, "coarse")[0]
    out = _sample_advanced(patched, varied_positive, negative, varied_latent)
    assert out.shape[0] == 3 and rel_err(out[:1], latent) < 1e-4
    assert rel_err(out[1:2], out[2:3]) > 1e-3
