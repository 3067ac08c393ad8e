"""Tiny random-weight MMDiT models (Flux, SD3) built through ComfyUI's own classes.

The configs are what ``comfy.model_detection`` produces for a Flux / SD3 state dict, at widths a
CPU samples in milliseconds (a 4-step euler on a 16x16 latent: ~0.03 s). ``context_in_dim`` and
``vec_in_dim`` are config values, so the context is [B, T, MMDIT_CONTEXT_DIM], not T5's 4096.
Both models sample with flow matching (ComfyUI's CONST: x = (1-σ)·x0 + σ·ε, denoised = x - σ·v).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from harness.comfyui import ensure_comfyui
from harness.tiny_models import fill_random_

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher

MMDIT_CONTEXT_DIM = 32
MMDIT_POOLED_DIM = 16
MMDIT_LATENT_CHANNELS = 16


def flux_unet_config(hidden: int = 64, heads: int = 2, depth: int = 1, single: int = 2) -> dict[str, Any]:
    """A Flux-dev layout (guidance embedding) with ``depth`` double and ``single`` single blocks."""
    import comfy.ldm.flux.model

    config = dict(image_model="flux", in_channels=MMDIT_LATENT_CHANNELS, out_channels=MMDIT_LATENT_CHANNELS,
                  patch_size=2, vec_in_dim=MMDIT_POOLED_DIM, context_in_dim=MMDIT_CONTEXT_DIM,
                  hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single,
                  axes_dim=[8, 12, 12],  # RoPE axes: they sum to hidden / heads, each even
                  theta=10000, qkv_bias=True, guidance_embed=True)
    # 0.33.0's FluxParams requires txt_ids_dims; 0.3.64's has no such field and refuses it
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        config["txt_ids_dims"] = []
    return config


def sd3_unet_config(depth: int = 2) -> dict[str, Any]:
    """An SD3 layout: hidden size 64·depth and depth heads, as mmdit.py derives them."""
    return dict(in_channels=MMDIT_LATENT_CHANNELS, out_channels=MMDIT_LATENT_CHANNELS, patch_size=2, depth=depth,
                input_size=None, adm_in_channels=MMDIT_POOLED_DIM, pos_embed_scaling_factor=None,
                context_embedder_config={"target": "torch.nn.Linear",
                                         "params": {"in_features": MMDIT_CONTEXT_DIM, "out_features": 64 * depth}},
                num_patches=64 * 64, pos_embed_max_size=64, qk_norm="rms", x_block_self_attn_layers=[])


def _patcher(model_config: Any, seed: int) -> comfy.model_patcher.ModelPatcher:
    import comfy.model_management as mm
    import comfy.model_patcher

    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def tiny_flux_model(seed: int = 0, **layout: int) -> comfy.model_patcher.ModelPatcher:
    """Flux-dev-shaped ModelPatcher (one double, two single blocks by default; 339 k parameters)."""
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.Flux(flux_unet_config(**layout)), seed)


def tiny_sd3_model(seed: int = 0, depth: int = 2) -> comfy.model_patcher.ModelPatcher:
    """SD3-shaped ModelPatcher (two joint blocks by default; 1.1 M parameters)."""
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.SD3(sd3_unet_config(depth)), seed)


def random_conditioning(batch: int = 1, tokens: int = 8, seed: int = 1, guidance: float | None = None) -> list:
    """A CONDITIONING for either model: context [batch, tokens, 32] and a pooled vector (0.3.64's
    Flux requires one), optionally Flux's guidance."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, MMDIT_CONTEXT_DIM, generator=generator)
    extra: dict[str, Any] = {"pooled_output": torch.randn(batch, MMDIT_POOLED_DIM, generator=generator)}
    if guidance is not None:
        extra["guidance"] = guidance
    return [[context, extra]]
