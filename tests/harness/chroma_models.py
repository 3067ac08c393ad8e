"""Tiny random-weight Chroma and Chroma Radiance models built through ComfyUI's own classes
(families.md §6): Flux-like blocks at width 64 (one double, two single) with one modulation
approximator; Radiance works on RGB pixels in 16×16 patches with a NeRF decoder."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from harness.comfyui import ensure_comfyui
from harness.tiny_models import fill_random_

CHROMA_CONTEXT_DIM = 32
CHROMA_POOLED_DIM = 16  # 0.3.64's Flux conditioning asks for a pooled vector, which Chroma ignores
CHROMA_LATENT_CHANNELS = 16


def _with_host_fields(config: dict[str, Any], params: type) -> dict[str, Any]:
    """Drop what this host's params class lacks (0.3.64 has no txt_ids_dims / vec_in_dim)."""
    fields = {f.name for f in dataclasses.fields(params)}
    return {k: v for k, v in config.items() if k in fields or k == "image_model"}


def chroma_unet_config(depth: int = 1, single: int = 2) -> dict[str, Any]:
    import comfy.ldm.chroma.model

    config = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=CHROMA_CONTEXT_DIM,
                  hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=depth, depth_single_blocks=single,
                  axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True, in_dim=64, out_dim=64,
                  hidden_dim=32, n_layers=1, txt_ids_dims=[], vec_in_dim=None)
    return _with_host_fields(config, comfy.ldm.chroma.model.ChromaParams)


def chroma_radiance_unet_config() -> dict[str, Any]:
    import comfy.ldm.chroma_radiance.model

    config = {**chroma_unet_config(), "image_model": "chroma_radiance", "in_channels": 3, "out_channels": 3,
              "patch_size": 16, "nerf_hidden_size": 16, "nerf_mlp_ratio": 4, "nerf_depth": 1, "nerf_max_freqs": 8,
              "nerf_tile_size": 512, "nerf_final_head_type": "linear", "nerf_embedder_dtype": torch.float32,
              "use_x0": False, "use_sequential_txt_ids": False, "txt_ids_dims": [], "vec_in_dim": None}
    return _with_host_fields(config, comfy.ldm.chroma_radiance.model.ChromaRadianceParams)


def _patcher(model_config: Any, seed: int):
    import comfy.model_management as mm
    import comfy.model_patcher

    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def tiny_chroma_model(seed: int = 0):
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.Chroma(chroma_unet_config()), seed)


def tiny_chroma_radiance_model(seed: int = 0):
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.ChromaRadiance(chroma_radiance_unet_config()), seed)


def random_conditioning(batch: int = 1, tokens: int = 8, seed: int = 1) -> list:
    """A T5-like CONDITIONING of ``tokens`` columns (Chroma pads nothing), with the pooled vector
    0.3.64's Flux conditioning requires."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, CHROMA_CONTEXT_DIM, generator=generator)
    return [[context, {"pooled_output": torch.randn(batch, CHROMA_POOLED_DIM, generator=generator)}]]
