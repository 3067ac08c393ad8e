"""Inverting a latent and reconstructing it through the nodes as a workflow does: 'Invert Image',
then the stock KSamplerAdvanced with 'Apply Inversion'. Shared by the inversion and variation tests
and scripts/report.py's sweeps."""

from __future__ import annotations

import torch

from harness.comfyui import encode

STEPS = 10
"""Sampling steps of the inversion and its reconstruction unless a caller says otherwise."""


def node(name):
    """An instance of the node class registered as `name`."""
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]()


def invert(model, clip, latent, method, steps=STEPS, guidance=7.5, inner_steps=0, prompt=None):
    """(positive, negative, noisy latent, Inversion) of `latent` [B, 4, H, W] (LATENT space) with the
    'Invert Image' node: `prompt` (default "a red square") against the empty prompt, ddim_uniform."""
    positive = encode(clip, prompt or "a red square")
    negative = encode(clip, "")
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(model, positive, negative, {"samples": latent}, method,
                                                               "ddim_uniform", steps, guidance, inner_steps, 1e-5)
    return positive, negative, noisy, inversion


def reconstruct(model, positive, negative, noisy, inversion, cfg=None, sampler="euler", steps=STEPS, add_noise="disable"):
    """The latent that KSamplerAdvanced samples from `noisy` with 'Apply Inversion' (cfg: the
    inversion's guidance unless given)."""
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    with torch.inference_mode():
        return node("KSamplerAdvanced").sample(patched, add_noise, 0, steps, inversion.guidance if cfg is None else cfg,
                                               sampler, "ddim_uniform", positive, negative, noisy, 0, 10000, "disable")[0]["samples"]


def rel_err(a, b):
    """||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm())
