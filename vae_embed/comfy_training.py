"""ComfyUI side of training an embedding VAE: the schedule and per-step tensors to train along, the
training paths (DDIM inversions of photos, a sampling run with the edit prompt) through a loaded
ComfyUI model, and differentiable CLIP features from ComfyUI's CLIP, VAE and CLIP vision objects.

Call everything that builds tensors for autograd inside ``inversion.comfy_model.gradients_through``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import comfy.model_management
import torch

from ..attention.clip_tokens import layout_key
from ..base.fingerprint import model_fingerprint
from ..inversion.comfy_model import autograd_copy, eps_function, input_scaling, model_space_latent, sampling_sigmas
from ..inversion.comfy_patch import InversionMismatchError, check_latent_fits
from ..inversion.ddim import UncondEps, ddim_invert, guided_trajectory
from ..inversion.result import Inversion
from .training import EditTrajectory, ImageFeatures, Trajectory


def training_schedule(model, inversion: Inversion | None, scheduler: str, steps: int) -> torch.Tensor:
    """The σ schedule to train along: the inversion's (checked against the model), else the sampler's."""
    if inversion is None:
        return sampling_sigmas(model, scheduler, steps)
    if inversion.switch_at_step:
        raise InversionMismatchError("inversion: it was made over two experts (model_low_noise); training follows "
                                     "one model, so invert the photo with this model alone")
    if inversion.model_fingerprint != model_fingerprint(model):
        raise InversionMismatchError("inversion: it was made with another model; invert the photo with this model")
    try:
        check_latent_fits(inversion, model)
    except InversionMismatchError as e:
        raise InversionMismatchError(f"inversion: {e}") from None
    return inversion.sigmas.float()


def step_tensors(model, sigmas: torch.Tensor, inversion: Inversion | None,
                 null: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """On the model's device: σ's, the model timestep of every step, and the null text of every step
    (the inversion's optimised ones, else ``null [1, tokens, dim]`` repeated)."""
    if inversion is not None and inversion.unconds.shape[1:] != null.shape[1:]:
        raise InversionMismatchError(
            f"inversion: its null texts are {list(inversion.unconds.shape[1:])} (tokens, channels), the negative's "
            f"{list(null.shape[1:])}; use the negative prompt and text encoder the inversion was made with")
    device = model.load_device
    sig = sigmas.clone().to(device)  # tensors made in inference mode cannot enter autograd
    timesteps = model.get_model_object("model_sampling").timestep(sig[:-1]).float()
    steps = len(sigmas) - 1
    nulls = (inversion.unconds.clone().to(device) if inversion is not None
             else autograd_copy(null[:1], device).expand(steps, -1, -1).clone())
    return sig, timesteps, nulls


def photo_trajectories(model, samples: torch.Tensor, cond: torch.Tensor, cond_extras: dict,
                       sig: torch.Tensor, timesteps: torch.Tensor, nulls: torch.Tensor) -> list[Trajectory]:
    """One DDIM inversion with the prompt ``cond`` per photo of the LATENT ``samples``, for the
    null-text VAE (the tensors from :func:`step_tensors`)."""
    cond_t = autograd_copy(cond[:1], model.load_device)
    eps_c = eps_function(model, cond_extras, samples[:1].shape)

    def eps_cond(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return eps_c(x, s, cond_t)

    scaling = input_scaling(model)
    trajectories = []
    for k in range(samples.shape[0]):
        x0 = model_space_latent(model, samples[k : k + 1])
        pivots = ddim_invert(eps_cond, x0, sig, scaling, check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        trajectories.append(Trajectory(pivots, sig, timesteps, nulls, eps_cond))
    return trajectories


def edit_trajectory(model, start: torch.Tensor, eps_edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    eps_null: UncondEps, steps: Sequence[torch.Tensor], guidance: float,
                    image_features: ImageFeatures, noise_seed: int | None) -> EditTrajectory:
    """The conditional VAE's kept sampling run: guided Euler/DDIM from the LATENT ``start`` (an
    inversion's noisy latent; or, with ``noise_seed``, a latent that gets the seed's noise) with the
    edit prompt's ε, along ``steps`` (:func:`step_tensors`), and its final image's CLIP features."""
    sig, timesteps, nulls = steps
    x = model_space_latent(model, start)
    if noise_seed is not None:
        noise = torch.randn(start.shape, generator=torch.Generator().manual_seed(noise_seed)).to(x.device)
        x = model.get_model_object("model_sampling").noise_scaling(sig[:1], noise, x)
    latents = guided_trajectory(eps_edit, eps_null, x, sig, nulls, guidance)
    with torch.no_grad():
        edit_image = image_features(latents[-1])[0]
    return EditTrajectory(latents, sig, timesteps, nulls, edit_image)


def embedding_text_features(clip, prompt: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], list]:
    """(CLIP joint-space text features of an embedding, the prompt's CONDITIONING). The features are
    the end token's state through the text encoder's projection: what CLIP compares with images
    (SD2.x/SDXL condition on the penultimate layer, so there it is an approximation). SD1.x
    checkpoints carry no text projection (ComfyUI leaves CLIP-L's uninitialised when it loads
    one), so for SD1.x the end token's state is used unprojected."""
    tokens = clip.tokenize(prompt)
    key = layout_key(tokens)
    if key == "l" and "g" in tokens:
        key = "g"  # SDXL: CLIP-G's projection, over its 1280 channels after CLIP-L's 768
    ids = [t[0] for t in tokens[key][0]]
    end = getattr(clip.tokenizer, f"clip_{key}").end_token
    column = ids.index(end) if end in ids else len(ids) - 1
    encoder = getattr(clip.cond_stage_model, f"clip_{key}")
    weight = encoder.transformer.text_projection.weight
    channels = weight.shape[1]
    if key == "l" and "g" not in tokens:  # SD1.x: the projection holds whatever memory it was given
        weight = torch.eye(channels, dtype=weight.dtype, device=weight.device)
    conditioning = clip.encode_from_tokens_scheduled(tokens)
    start = conditioning[0][0].shape[-1] - channels

    def features(embedding: torch.Tensor) -> torch.Tensor:
        state = embedding[:, column, start : start + channels]
        return torch.nn.functional.linear(state.to(weight.dtype), weight).float()

    return features, conditioning


def latent_image_features(model, vae, clip_vision) -> ImageFeatures:
    """Differentiable (CLIP image features, perceptual features) of model-space latents: decoded by the
    VAE, resized and normalised as CLIP expects (ComfyUI's clip_preprocess rounds to 8 bits, which
    would stop the gradient), through the CLIP vision model; the perceptual features are its
    penultimate hidden states."""
    size, mean, std = clip_vision.image_size, clip_vision.image_mean, clip_vision.image_std

    def features(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoder = vae.first_stage_model
        z = model.model.process_latent_out(latents).to(vae.device, vae.vae_dtype)
        pixels = ((decoder.decode(z).float() + 1.0) / 2.0).clamp(0.0, 1.0)
        pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        m = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
        device = clip_vision.load_device
        # ComfyUI's CLIP layers add residuals in place; saving copies keeps autograd's inputs intact
        with torch.autograd.graph.saved_tensors_hooks(torch.clone, lambda saved: saved):
            out = clip_vision.model(pixel_values=((pixels - m) / s).to(device), intermediate_output=-2)
        return out[2].float().to(latents.device), out[1].float().flatten(1).to(latents.device)

    return features
