"""Real-image inversion nodes: invert, apply to a model, save/load, and check the reconstruction."""

from __future__ import annotations

import dataclasses
import os

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ..base.errors import PromptEditError
from ..base.file_names import check_file_name, file_name_problem
from ..base.fingerprint import model_fingerprint
from ..base.image_metrics import latent_mse, psnr, ssim
from ..inversion.comfy_model import (
    autograd_copy,
    eps_function,
    gradients_through,
    input_scaling,
    model_space_latent,
    paired_eps_function,
    sampling_sigmas,
)
from ..inversion.comfy_experts import ExpertLoader, expert_steps, joined
from ..inversion.comfy_patch import check_method_fits_model, install
from ..inversion.ddim import ddim_invert
from ..inversion.null_text import NullTextSettings, null_text_invert
from ..inversion.result import Inversion, InversionFileError
from .common import (
    CATEGORY_INVERSION,
    INVERSION,
    model_file_check,
    register_model_folder,
    writable_model_folder,
)

METHODS = {
    "null-text": NullTextSettings(),  # the original recipe
    # from the source prompt's embedding, secant line-search steps; every third step keeps the last context
    "null-text fast": NullTextSettings(init="source", check_before_step=True, optimizer="secant", rest_every=3),
    "direct": None,  # no optimisation: the sampler's source item is corrected onto the pivots (exact)
    "negative-prompt": None,  # no optimisation: the source prompt as the unconditional context
    "ddim": None,  # plain DDIM inversion, the empty prompt as the unconditional context
}
DEFAULT_INNER_STEPS = {"null-text": 10, "null-text fast": 1}
INVERSION_FOLDER = register_model_folder("inversions")


def _single(conditioning, name: str) -> tuple[torch.Tensor, dict]:
    if not conditioning or conditioning[0][0].shape[0] != 1:
        raise PromptEditError(f"{name}: give one prompt (a CONDITIONING with one item), as from CLIP Text Encode")
    return conditioning[0][0], conditioning[0][1]


def _photo_latent(latent, image, vae) -> torch.Tensor:
    """The latent to invert: the LATENT input, or the IMAGE encoded with the VAE."""
    if (latent is None) == (image is None):
        raise PromptEditError("latent / image: connect either a latent (from VAE Encode) or an image and a vae, not "
                         + ("both" if latent is not None else "neither"))
    if latent is not None:
        return latent["samples"]
    if vae is None:
        raise PromptEditError("vae: connect the VAE that encodes image (e.g. the checkpoint's VAE)")
    ratio = vae.downscale_ratio if isinstance(vae.downscale_ratio, int) else 8
    height, width = image.shape[1:3]
    if height % ratio or width % ratio:
        raise PromptEditError(f"image: its size {width}x{height} is not a multiple of {ratio}; crop or scale it first "
                         f"(e.g. 'Upscale Image' to {width // ratio * ratio}x{height // ratio * ratio})")
    return vae.encode(image[:, :, :, :3])


class InvertImage:
    DESCRIPTION = (
        "Inverts a real image's latent with DDIM inversion along the exact σ schedule of the chosen "
        "scheduler and steps, and (null-text methods) optimises one unconditional embedding per step so "
        "that guided sampling reconstructs it, or (direct) keeps the inversion's latents so that 'Apply "
        "Inversion' puts the source back on them exactly at every step. Sample the LATENT with "
        "KSamplerAdvanced (add_noise disable, euler or ddim, same scheduler and steps) and the MODEL "
        "from 'Apply Inversion'."
    )
    CATEGORY = CATEGORY_INVERSION
    FUNCTION = "invert"
    RETURN_TYPES = ("LATENT", INVERSION)
    RETURN_NAMES = ("noisy_latent", "inversion")
    OUTPUT_TOOLTIPS = ("The inverted (noisy) latent to start sampling from; KSamplerAdvanced with add_noise disabled.",
                       "Per-step unconditional embeddings and the schedule, for 'Apply Inversion' and 'Save Inversion'.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model you will edit with (with model_low_noise: the high-noise expert). Models that run real CFG (SD1.x, SD2.x, SDXL, SD3 / SD3.5, Qwen-Image, Chroma, Z-Image, Lumina 2, Flux.2 klein, Wan): every method; guidance-distilled ones (Flux.1, Flux.2 dev): direct and ddim."}),
                "positive": ("CONDITIONING", {"tooltip": "The source prompt: a description of the photo."}),
                "negative": ("CONDITIONING", {"tooltip": (
                    "The null text: usually CLIP Text Encode of an empty prompt.")}),
                "method": (list(METHODS), {"default": "null-text fast", "tooltip": (
                    "null-text: the original recipe; null-text fast: starts from the source prompt and stops "
                    "as soon as the step is reconstructed; direct: no optimisation, the sampler puts the "
                    "source exactly back on the inversion at every step (exact at any cfg, fastest); "
                    "negative-prompt: no optimisation; ddim: plain DDIM inversion "
                    "(reconstructs only at cfg 1).")}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "ddim_uniform", "tooltip": (
                    "The scheduler the sampler will use.")}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": (
                    "The sampler's steps (ddim_uniform adds one when 1000 is not a multiple of steps).")}),
                "guidance": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": (
                    "The cfg you will sample with; null-text optimisation needs more than 1.")}),
                "inner_steps": ("INT", {"default": 0, "min": 0, "max": 100, "tooltip": (
                    "Null-text methods: at most this many updates per sampling step; 0: the method's default "
                    "(null-text 10 as in the original recipe, null-text fast 1; 2 reconstructs a little "
                    "better for about 1.5x the time).")}),
                "early_stop": ("FLOAT", {"default": 1e-5, "min": 0.0, "max": 1.0, "step": 1e-6, "tooltip": (
                    "Null-text: a step is done when its loss is below this + step·2e-5.")}),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": (
                    "The photo's latent from VAE Encode (one image); or give image and vae.")}),
                "image": ("IMAGE", {"tooltip": (
                    "The photo (one image, sides a multiple of 8), encoded with vae; instead of latent.")}),
                "vae": ("VAE", {"tooltip": "The VAE that encodes image."}),
                "model_low_noise": ("MODEL", {"tooltip": (
                    "Two experts (Wan 2.2 A14B): the low-noise expert, which samples the steps from switch_at_step "
                    "on; model is then the high-noise expert. Apply Inversion takes either.")}),
                "switch_at_step": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": (
                    "Two experts: the step where model_low_noise takes over (the high-noise KSamplerAdvanced's "
                    "end_at_step, the low-noise one's start_at_step); 0: model alone over every step.")}),
            },
        }

    def invert(self, model, positive, negative, latent=None, method: str = "null-text fast", scheduler: str = "ddim_uniform",
               steps: int = 50, guidance: float = 7.5, inner_steps: int = 0, early_stop: float = 1e-5, image=None, vae=None,
               model_low_noise=None, switch_at_step: int = 0):
        if method not in METHODS:
            raise PromptEditError(f"method: {method!r} is not one of {list(METHODS)}")
        if scheduler not in comfy.samplers.KSampler.SCHEDULERS:
            raise PromptEditError(f"scheduler: {scheduler!r} is not one of {comfy.samplers.KSampler.SCHEDULERS}")
        check_method_fits_model(method, model)
        if model_low_noise is not None:
            check_method_fits_model(method, model_low_noise)
        cond, cond_extras = _single(positive, "positive")
        null, null_extras = _single(negative, "negative")
        samples = _photo_latent(latent, image, vae)
        if samples.shape[0] != 1:
            raise PromptEditError(f"latent: invert one image at a time (the latent holds {samples.shape[0]})")
        settings = METHODS[method]
        if settings is not None:
            try:
                inner_steps = inner_steps or DEFAULT_INNER_STEPS[method]
                settings = dataclasses.replace(settings, guidance=guidance, inner_steps=inner_steps, epsilon=early_stop)
            except ValueError as e:
                raise PromptEditError(f"guidance: {e}") from None
            if settings.init == "source" and cond.shape[1:] != null.shape[1:]:
                raise PromptEditError(f"positive / negative: the prompts have {cond.shape[1]} and {null.shape[1]} token "
                                 "columns; 'null-text fast' starts from the positive, so keep both under 75 tokens "
                                 "or use 'null-text'")
        sigmas = sampling_sigmas(model, scheduler, steps)
        models, experts = expert_steps(model, model_low_noise, switch_at_step, sigmas, scheduler, steps)
        n = len(sigmas) - 1
        total = n + (n * inner_steps if settings is not None else 0)
        bar = comfy.utils.ProgressBar(total)
        with gradients_through(model) as device:
            # the experts' ε functions joined into one per kind: each step calls the expert that samples it
            loader = ExpertLoader(models, loaded=0)

            def each(make):
                return joined(make, models, sigmas, experts, loader)

            x0 = model_space_latent(model, samples[:1])
            cond, null, sig = (autograd_copy(t, device) for t in (cond, null, sigmas))
            eps_cond_ctx = each(lambda m: eps_function(m, cond_extras, x0.shape))
            eps_uncond = each(lambda m: eps_function(m, null_extras, x0.shape))
            interrupt = comfy.model_management.throw_exception_if_processing_interrupted
            pivots = ddim_invert(lambda x, s: eps_cond_ctx(x, s, cond), x0, sig, input_scaling(model),
                                 progress=lambda d, t: bar.update_absolute(d, total), check_interrupt=interrupt)
            if settings is None:
                base = cond if method == "negative-prompt" else null
                unconds = base[0].expand(n, -1, -1).clone()
            else:
                paired = (each(lambda m: paired_eps_function(m, cond_extras, null_extras, x0.shape, cond[:1], null[:1]))
                          if cond.shape == null.shape else None)
                result = null_text_invert(
                    lambda x, s: eps_cond_ctx(x, s, cond), eps_uncond, pivots, sig, cond, null, settings,
                    progress=lambda d, t: bar.update_absolute(n + d, total),
                    check_interrupt=interrupt, eps_pair=paired,
                )
                unconds = result.unconds
        noisy = model.model.process_latent_out(pivots[0].detach()).cpu()
        kept_pivots = torch.cat(pivots).detach().float().cpu() if method == "direct" else None
        inversion = Inversion(unconds.detach().float().cpu(), sigmas, noisy, samples[:1].float().cpu(), float(guidance),
                              method, scheduler, steps, model_fingerprint(model), kept_pivots,
                              model_fingerprint(models[1]) if len(models) > 1 else "", experts.switch)
        return {"samples": noisy}, inversion


class ApplyInversion:
    DESCRIPTION = ("Patches the MODEL so that sampling step k uses the inversion's unconditional embedding k "
                   "(null-text methods), or puts the source item back on the inversion's step k (direct).")
    CATEGORY = CATEGORY_INVERSION
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The patched model, for KSamplerAdvanced (add_noise disable, euler/ddim, the inversion's scheduler and steps).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": (
                    "The model the inversion was made with, or either of its two experts (Wan 2.2 A14B: each "
                    "expert through its own Apply Inversion, for its own sampler's steps); may already carry P2P "
                    "patches.")}),
                "inversion": (INVERSION, {"tooltip": "From 'Invert Image' or 'Load Inversion'."}),
            },
            "optional": {
                "correct_edits": ("BOOLEAN", {"default": False, "tooltip": (
                    "Direct inversion only: also add the source's per-step correction to the edited items "
                    "(off: the paper's default, the edits follow the attention control alone).")}),
            },
        }

    def apply(self, model, inversion, correct_edits: bool = False):
        try:
            return (install(model, inversion, correct_edits),)
        except ValueError as e:
            raise PromptEditError(f"inversion: {e}") from None


class SaveInversion:
    DESCRIPTION = "Saves an inversion (safetensors) to models/inversions, so a photo is inverted once and edited many times."
    CATEGORY = CATEGORY_INVERSION
    FUNCTION = "save"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "inversion": (INVERSION, {"tooltip": "The inversion to keep."}),
            "filename_prefix": ("STRING", {"default": "inversion", "tooltip": (
                "File name prefix; a counter is appended.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        # before any node of the prompt runs: a name the file system refuses would fail only when
        # the finished inversion is written (None: the prefix comes from a link, checked in save)
        if filename_prefix is None:
            return True
        problem = _prefix_problem(filename_prefix)
        return f"filename_prefix: {filename_prefix!r} {problem}" if problem else True

    def save(self, inversion, filename_prefix: str):
        directory = writable_model_folder(INVERSION_FOLDER)
        prefix = check_file_name(_prefix(filename_prefix), "filename_prefix", SAVED_SUFFIX, directory)
        existing = set(os.listdir(directory))
        counter = next(i for i in range(1, 10**6) if f"{prefix}_{i:05d}.safetensors" not in existing)
        name = f"{prefix}_{counter:05d}.safetensors"
        inversion.save(os.path.join(directory, name))
        return {"ui": {"text": [name]}}


SAVED_SUFFIX = "_999999.safetensors"  # the longest the counter makes


def _prefix(filename_prefix: object) -> object:
    return (filename_prefix.strip() or "inversion") if isinstance(filename_prefix, str) else filename_prefix


def _prefix_problem(filename_prefix: object) -> str | None:
    return file_name_problem(_prefix(filename_prefix), SAVED_SUFFIX, folder_paths.get_folder_paths(INVERSION_FOLDER)[0])


class LoadInversion:
    DESCRIPTION = "Loads an inversion saved by 'Save Inversion' (safetensors only)."
    CATEGORY = CATEGORY_INVERSION
    FUNCTION = "load"
    RETURN_TYPES = ("LATENT", INVERSION)
    RETURN_NAMES = ("noisy_latent", "inversion")
    OUTPUT_TOOLTIPS = ("The inverted latent to sample from.", "The loaded inversion.")

    @classmethod
    def INPUT_TYPES(cls):
        files = folder_paths.get_filename_list(INVERSION_FOLDER)
        return {"required": {"name": (files, {"tooltip": "A file in models/inversions."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, name: str):
        return model_file_check(INVERSION_FOLDER, name, (
            "invert the photo first and keep it with 'Save Inversion' (as the example workflow "
            "inversion_null_text_p2p_replace.json does), which saves it there"))

    def load(self, name: str):
        try:
            inversion = Inversion.load(folder_paths.get_full_path_or_raise(INVERSION_FOLDER, name))
        except InversionFileError as e:
            raise InversionFileError(f"name: {e}") from None
        return {"samples": inversion.noisy}, inversion


class ReconstructionMetrics:
    DESCRIPTION = "PSNR and SSIM between the photo and its reconstruction (and MSE between latents when given)."
    CATEGORY = CATEGORY_INVERSION
    FUNCTION = "measure"
    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("psnr_db", "ssim", "latent_mse", "summary")
    OUTPUT_TOOLTIPS = ("Mean PSNR in dB.", "Mean SSIM.", "Mean latent MSE (0 when no latents are given).", "A one-line summary.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original": ("IMAGE", {"tooltip": "The photo (one image, or one per reconstruction)."}),
                "reconstruction": ("IMAGE", {"tooltip": "The decoded reconstruction(s)."}),
            },
            "optional": {
                "original_latent": ("LATENT", {"tooltip": "The photo's latent (VAE Encode)."}),
                "reconstructed_latent": ("LATENT", {"tooltip": "The sampler's output latent."}),
            },
        }

    def measure(self, original, reconstruction, original_latent=None, reconstructed_latent=None):
        if original.shape[1:] != reconstruction.shape[1:]:
            raise PromptEditError(f"original / reconstruction: sizes {tuple(original.shape[1:3])} and "
                             f"{tuple(reconstruction.shape[1:3])} differ; compare images of the same size")
        reference = original.expand(reconstruction.shape[0], -1, -1, -1) if original.shape[0] == 1 else original
        p, s = psnr(reconstruction, reference).mean(), ssim(reconstruction, reference).mean()
        mse = 0.0
        if original_latent is not None and reconstructed_latent is not None:
            a, b = original_latent["samples"], reconstructed_latent["samples"]
            mse = float(latent_mse(b, a.expand(b.shape[0], *a.shape[1:]) if a.shape[0] == 1 else a).mean())
        summary = f"PSNR {float(p):.2f} dB, SSIM {float(s):.4f}, latent MSE {mse:.6f}"
        return {"ui": {"text": [summary]}, "result": (float(p), float(s), mse, summary)}
