"""Apply an :class:`~.result.Inversion` to a ComfyUI model: step ``k`` of the stock sampler gets the
unconditional context ``unconds[k]`` (null-text methods) or has its source item corrected onto
pivot ``k + 1`` (direct), and a sampler that would not reconstruct is refused.

On UNets (SD1.x, SD2.x, SDXL) the unconditional context is swapped in their cross-attention
patch. A joint-attention family (SD3 / SD3.5 …, which consult no such patch) gets it in the
context the model is called with, through an ``APPLY_MODEL`` wrapper. On a model without real
classifier-free guidance (the registry's ``real_cfg``: Flux.1 is guidance-distilled, sampled at
cfg 1 with no unconditional pass) only the methods that need no unconditional context apply:
``direct`` and ``ddim``.
"""

from __future__ import annotations

import comfy.patcher_extension
import torch

from ..base.errors import PromptEditError
from ..base.fingerprint import model_fingerprint
from ..base.sigma_steps import StepCache
from ..families import family_of
from ..patching.comfy_model import set_outer_sample
from ..patching.sampling_call import UNCOND, chunk_rows
from .direct import corrected_denoised
from .result import Inversion

WRAPPER_KEY = "prompt_edit_null_text"
EXACT_SAMPLERS = ("sample_euler",)  # ComfyUI's "euler" and "ddim" (= euler) are deterministic DDIM
# The methods that swap the unconditional context (UnconditionalContexts), so need a model with real CFG.
CONTEXT_METHODS = ("null-text", "null-text fast", "negative-prompt")


class InversionMismatchError(PromptEditError):
    """An inversion meets a model or sampler it does not reconstruct with; the message says what to set."""


class UnconditionalContexts:
    """Gives the unconditional chunk of each sampling call the inversion's context of its step:
    as a UNet's attn2 patch, or (MMDiT) as an ``APPLY_MODEL`` wrapper around the model call."""

    def __init__(self, inversion: Inversion):
        self.inversion = inversion
        self._steps = StepCache()  # read once per call: under MultiGPU CFG Split chunks run in threads at once

    def __deepcopy__(self, memo: dict) -> "UnconditionalContexts":
        return self  # in model_options (0.3.64's clone() deep-copies it): shares the inversion's tensors and step cache

    def swapped(self, context: torch.Tensor, extra_options: dict) -> torch.Tensor:
        """``context`` with the step's unconditional context in the rows of the unconditional chunk
        (the same tensor where the call has none)."""
        chunks, sigmas = extra_options.get("cond_or_uncond"), extra_options.get("sigmas")
        if not chunks or sigmas is None or UNCOND not in chunks:
            return context
        emb = self.inversion.unconds[self._steps.step(sigmas, self.inversion.sigmas)].to(context.device, context.dtype)
        tokens = context.shape[1]
        if emb.shape[-1] != context.shape[-1]:
            raise InversionMismatchError(
                f"the negative conditioning has {context.shape[-1]} channels, the inversion's {emb.shape[-1]}; "
                "use the text encoder the inversion was made with")
        if tokens % emb.shape[0]:
            raise InversionMismatchError(
                f"the negative conditioning has {tokens} token columns, the inversion {emb.shape[0]}; "
                "use the negative prompt the inversion was made with"
            )
        emb = emb.repeat(tokens // emb.shape[0], 1)
        new_context = context.clone()
        for rows, chunk in chunk_rows(extra_options, context.shape[0]):
            if chunk == UNCOND:
                new_context[rows] = emb
        return new_context

    def __call__(self, n, context, value, extra_options: dict):
        """The attn2 patch (UNet): the swapped context as the keys' and values' input."""
        new_context = self.swapped(context, extra_options)
        return n, new_context, new_context if value is context else value

    def apply_model(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None,
                    **kwargs):
        """The ``APPLY_MODEL`` wrapper (MMDiT): the model called with the swapped context."""
        if c_crossattn is not None and transformer_options:
            c_crossattn = self.swapped(c_crossattn, transformer_options)
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def check_latent_fits(inversion: Inversion, model, latent: torch.Tensor | None = None) -> None:
    """Refuse an inversion whose latent has other channels than ``model``'s, or (``latent``: what
    the sampler is given) another size, before it reaches the model as a shape error."""
    ours = tuple(inversion.noisy.shape[1:])
    channels = getattr(getattr(model.model, "latent_format", None), "latent_channels", None)
    if channels is not None and ours[0] != channels:
        raise InversionMismatchError(
            f"the inversion's latent has {ours[0]} channels, this model's {channels}; invert the image with this model")
    if latent is not None and tuple(latent.shape[1:]) != ours:
        raise InversionMismatchError(
            f"the sampler's latent is {list(latent.shape[1:])}, the inversion's {list(ours)}; sample the "
            "inversion's noisy_latent (from Invert Image or Load Inversion, through P2P Prompts for an edit)")


def _check_sampling(inversion: Inversion, guider, noise, sampler, sigmas) -> None:
    """Refuse a sampler that would not walk the inversion's path back (its message says what to set)."""
    function = getattr(getattr(sampler, "sampler_function", None), "__name__", "")
    if function not in EXACT_SAMPLERS:
        raise InversionMismatchError(
            f"the inversion reconstructs only with the deterministic 'euler' or 'ddim' sampler, not "
            f"'{function.removeprefix('sample_') or type(sampler).__name__}'; choose one of them in the sampler"
        )
    ours = inversion.sigmas.to(sigmas.device, sigmas.dtype)
    start = inversion.step_at(float(sigmas[0]))
    part = ours[start : start + len(sigmas)]
    if len(part) != len(sigmas) or not torch.allclose(part, sigmas, rtol=1e-4, atol=1e-5):
        raise InversionMismatchError(
            f"the sampler walks {len(sigmas) - 1} steps that are not the inversion's schedule "
            f"(scheduler '{inversion.scheduler}', {inversion.steps} steps); set the sampler's scheduler and "
            "steps to those of the inversion"
        )
    if torch.count_nonzero(noise) > 0:
        raise InversionMismatchError(
            "the sampler adds noise to the inverted latent, which is already noisy; use KSamplerAdvanced with "
            "add_noise 'disable' (or SamplerCustomAdvanced with DisableNoise)"
        )
    # only direct inversion reconstructs at any cfg; the others are made for the guidance they were given
    cfg = getattr(guider, "cfg", None)
    if inversion.method != "direct" and cfg is not None and abs(float(cfg) - inversion.guidance) > 1e-6:
        raise InversionMismatchError(
            f"the inversion (method '{inversion.method}') was made for cfg {inversion.guidance:g}, the sampler uses "
            f"cfg {float(cfg):g}, which would not give the photo back; sample at cfg {inversion.guidance:g}, or "
            f"invert again with guidance {float(cfg):g} (or with method 'direct', exact at any cfg)"
        )


def _check_expert_steps(inversion: Inversion, own: range, name: str, sigmas) -> None:
    """Refuse a sampler that walks steps of the schedule that another expert of the inversion samples
    (``own``: the steps of this model, ``name``: what it is to the inversion)."""
    start = inversion.step_at(float(sigmas[0]))
    end = start + len(sigmas) - 1
    if own.start <= start and end <= own.stop:
        return
    switch = inversion.switch_at_step
    fix = (f"end this sampler at step {switch} (KSamplerAdvanced's end_at_step) and sample steps {switch} to the end "
           "with the low-noise expert" if own.start == 0 else
           f"start this sampler at step {switch} (start_at_step, add_noise disable) with the first sampler's output, "
           f"and sample steps 0 to {switch} with the high-noise expert")
    raise InversionMismatchError(
        f"this model is {name}, which samples steps {own.start} to {own.stop} of the inversion's "
        f"{len(inversion.sigmas) - 1}, but the sampler walks steps {start} to {end}; {fix} (each expert through "
        "its own Apply Inversion)")


def check_method_fits_model(method: str, model) -> None:
    """Refuse a method that swaps the unconditional context on a model without real classifier-free
    guidance (Flux.1, a guidance-distilled file), and a model the pack does not know."""
    family = family_of(model)
    if method in CONTEXT_METHODS and not family.real_cfg(model):
        raise InversionMismatchError(
            f"method: '{method}' swaps the unconditional context of classifier-free guidance, which "
            f"{family.name} does not run ({family.cfg_note}); use 'direct' (exact at any guidance) or 'ddim'"
        )


def start_noise(model, noise: torch.Tensor, latent_image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The noise with which the sampler starts from ``latent_image`` itself, the inverted latent.

    The stock sampler starts at ``noise_scaling(σ0, noise, latent)``: ``latent + σ0·noise`` on
    ε-prediction models, so no noise (add_noise 'disable') keeps the latent; but on flow models
    (Flux, SD3: ``σ0·noise + (1−σ0)·latent``, and σ0 = 1) it would start from zeros and lose the
    inversion. ``noise_scaling`` is affine in the noise, so the noise that keeps the latent is
    solved for from two evaluations, whatever the model's sampling (0 on ε models).
    """
    sampling = model.get_model_object("model_sampling")
    latent = model.model.process_latent_in(latent_image) if torch.count_nonzero(latent_image) > 0 else latent_image
    sigma = sigma.to(latent.device, latent.dtype)
    at_zero = sampling.noise_scaling(sigma, torch.zeros_like(latent), latent)
    per_unit = sampling.noise_scaling(sigma, torch.ones_like(latent), latent) - at_zero
    if torch.equal(at_zero, latent):  # ε models: no noise keeps the latent (bit for bit)
        return noise
    return ((latent - at_zero) / per_unit).to(noise.device, noise.dtype)


class DirectInversionCorrection:
    """Post-CFG function: puts the source item (item 0) of every step exactly on the next pivot
    (inversion.direct); with ``correct_edits`` the other items get the same correction."""

    def __init__(self, inversion: Inversion, correct_edits: bool):
        self.inversion, self.correct_edits = inversion, correct_edits

    def __deepcopy__(self, memo: dict) -> "DirectInversionCorrection":
        return self  # in model_options (0.3.64's clone() deep-copies it): shares the inversion's pivots, not copies

    def __call__(self, args: dict) -> torch.Tensor:
        x, denoised, sigma = args["input"], args["denoised"], float(args["sigma"].reshape(-1)[0])
        step = self.inversion.step_at(sigma)
        sigma_next = float(self.inversion.sigmas[step + 1])
        pivot = self.inversion.pivots[step + 1].to(x.device)
        return corrected_denoised(x, denoised, sigma, sigma_next, pivot, self.correct_edits)


def install(model, inversion: Inversion, correct_edits: bool = False):
    """A clone of ``model`` that samples with the inversion's per-step unconditional contexts, or
    (method ``direct``) that corrects the source item onto the inversion's pivots at every step."""
    fingerprint = model_fingerprint(model)
    own = inversion.expert_of(fingerprint)
    if own is None:
        raise InversionMismatchError(
            "this inversion was made with two other models (its high-noise and low-noise experts); connect one of "
            "them, or invert the video again with this model" if inversion.switch_at_step else
            "this inversion was made with another model; invert the image again with this model"
        )
    name = inversion.expert_name(fingerprint)
    check_method_fits_model(inversion.method, model)
    check_latent_fits(inversion, model)
    patched = model.clone()
    if inversion.method == "direct":
        patched.set_model_sampler_post_cfg_function(DirectInversionCorrection(inversion, correct_edits))
    elif family_of(model).is_unet:
        patched.set_model_attn2_patch(UnconditionalContexts(inversion))
    elif inversion.method in CONTEXT_METHODS:  # a joint-attention model with real CFG (checked above)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY,
                                     UnconditionalContexts(inversion).apply_model)

    def outer_sample(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        _check_sampling(inversion, executor.class_obj, noise, sampler, sigmas)
        _check_expert_steps(inversion, own, name, sigmas)
        check_latent_fits(inversion, executor.class_obj.model_patcher, latent_image)
        # only the run from the inversion's noisy latent (step 0) is made to start on it; a later
        # segment (KSamplerAdvanced from start_at_step, add_noise disable) starts as the stock sampler
        # does: on flow models the first segment returned x/(1 − σ) (its leftover noise) and the stock
        # start (1 − σ)·latent gives x back, where forcing the latent would start from x/(1 − σ)
        if inversion.step_at(float(sigmas[0])) == 0:
            noise = start_noise(executor.class_obj.model_patcher, noise, latent_image, sigmas[0])
        return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)

    set_outer_sample(patched, WRAPPER_KEY, outer_sample)
    return patched
