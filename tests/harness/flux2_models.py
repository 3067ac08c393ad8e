"""Tiny random-weight Flux.2 models built through ComfyUI's own classes (families.md §6): one
double and two single blocks at width 64, global modulation, a 128-channel latent at patch 1, and
a context of width FLUX2_CONTEXT_DIM, which the model left-pads with zeros to 512 columns."""

from __future__ import annotations

from typing import Any

import torch

from harness.comfyui import ensure_comfyui
from harness.tiny_models import fill_random_

FLUX2_CONTEXT_DIM = 48
FLUX2_LATENT_CHANNELS = 128


def flux2_unet_config(guidance_embed: bool = True, depth: int = 1, single: int = 2) -> dict[str, Any]:
    """A Flux.2 layout: with ``guidance_embed`` a guidance-distilled one (dev), without it a
    real-CFG one (klein)."""
    return dict(image_model="flux2", hidden_size=64, num_heads=2, axes_dim=[8] * 4, mlp_ratio=3.0, theta=2000,
                in_channels=FLUX2_LATENT_CHANNELS, out_channels=FLUX2_LATENT_CHANNELS, patch_size=1,
                global_modulation=True, mlp_silu_act=True, qkv_bias=False, ops_bias=False, txt_ids_dims=[3],
                default_ref_method="index", ref_index_scale=10, context_in_dim=FLUX2_CONTEXT_DIM, vec_in_dim=None,
                depth=depth, depth_single_blocks=single, guidance_embed=guidance_embed, yak_mlp=False,
                txt_norm=False)


def tiny_flux2_model(seed: int = 0, guidance_embed: bool = True, **layout: Any):
    """A Flux.2-shaped ModelPatcher (needs a ComfyUI with model_base.Flux2)."""
    ensure_comfyui()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.Flux2(flux2_unet_config(guidance_embed, **layout))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def random_conditioning(batch: int = 1, tokens: int = 8, seed: int = 1, guidance: float | None = None) -> list:
    """A CONDITIONING of ``tokens`` random columns (the model pads them to 512 on the left)."""
    generator = torch.Generator().manual_seed(seed)
    extra: dict[str, Any] = {} if guidance is None else {"guidance": guidance}
    return [[torch.randn(batch, tokens, FLUX2_CONTEXT_DIM, generator=generator), extra]]
