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
# DDIM inversion takes the official step (null-text inversion's ddim_loop / next_step)


def _official_ddim_loop(unet, alphas_cumprod, timesteps, latent, context, v_prediction):
    """google/prompt-to-prompt null_text_w_ptp's ``ddim_loop`` with its ``next_step`` verbatim, in
    plain torch on the bare network (VP latents, no ComfyUI scaling): ``timesteps`` descending as a
    DDIM scheduler lists them, ``final_alpha_cumprod`` 1 (set_alpha_to_one, as ComfyUI ends at σ 0).
    A v-prediction network's output is turned into ε as diffusers' DDIM does."""
    num_train_timesteps, num_inference_steps, final_alpha_cumprod = 1000, len(timesteps), torch.tensor(1.0)

    def next_step(model_output, timestep, sample):
        timestep, next_timestep = min(timestep - num_train_timesteps // num_inference_steps, 999), timestep
        alpha_prod_t = alphas_cumprod[timestep] if timestep >= 0 else final_alpha_cumprod
        alpha_prod_t_next = alphas_cumprod[next_timestep]
        beta_prod_t = 1 - alpha_prod_t
        next_original_sample = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
        next_sample_direction = (1 - alpha_prod_t_next) ** 0.5 * model_output
        next_sample = alpha_prod_t_next ** 0.5 * next_original_sample + next_sample_direction
        return next_sample

    all_latent = [latent]
    latent = latent.clone()
    for i in range(num_inference_steps):
        t = timesteps[len(timesteps) - i - 1]
        noise_pred = unet(latent, torch.tensor([float(t)]), context=context)
        if v_prediction:  # ε = √ᾱ_t·v + √(1 − ᾱ_t)·x_t
            noise_pred = alphas_cumprod[t] ** 0.5 * noise_pred + (1 - alphas_cumprod[t]) ** 0.5 * latent
        latent = next_step(noise_pred, t, latent)
        all_latent.append(latent)
    return all_latent


@pytest.mark.parametrize("family", ["sd15", "sd2v"])
def test_ddim_inversion_matches_the_official_next_step(family, request):
    """Every pivot of Invert Image, as a VP latent, is the official loop's latent: the network sees
    the latent it holds with the noisier timestep (ComfyUI's c_in would otherwise shrink it)."""
    model = request.getfixturevalue(f"tiny_{family}")
    clip = request.getfixturevalue({"sd15": "tiny_sd15_clip", "sd2v": "tiny_sd2_clip"}[family])
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    positive, _, _, inversion = invert(model, clip, latent, "direct", steps=5, prompt="a photo of a cat")
    model_sampling = model.get_model_object("model_sampling")
    alphas_cumprod = 1.0 / (model_sampling.sigmas.float().cpu() ** 2 + 1.0)
    timesteps = [int(round(float(model_sampling.timestep(s)))) for s in inversion.sigmas[:-1]]  # 801, 601, …, 1
    with torch.inference_mode():
        official = _official_ddim_loop(model.model.diffusion_model, alphas_cumprod, timesteps,
                                       model.model.process_latent_in(latent), positive[0][0], family == "sd2v")
    vp_pivots = inversion.pivots / (inversion.sigmas.reshape(-1, 1, 1, 1) ** 2 + 1.0).sqrt()
    for k in range(len(timesteps) + 1):  # pivot k holds the latent at σ_k; the official list runs clean → noisy
        assert rel_err(vp_pivots[k : k + 1], official[len(timesteps) - k]) < 1e-4, k


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
