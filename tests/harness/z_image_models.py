"""Tiny random-weight Z-Image and Lumina 2 models (NextDiT) built through ComfyUI's own classes.

Both are ``comfy.model_base.Lumina2``; Z-Image is the ``comfy.supported_models.ZImage`` config
(ComfyUI ≥ 0.3.75), which pads the caption and the image tokens to multiples of 32 with learned
pad tokens. Z-Image needs ``dim ≥ 256`` (its adaLN input is ``min(dim, 256)`` while the timestep
embedder gives 256). The context is [B, T, NEXTDIT_CONTEXT_DIM] (``cap_feat_dim``), not Qwen3's
or Gemma's width; the latent is Flux's 16 channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from harness.comfyui import ensure_comfyui
from harness.tiny_models import fill_random_

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher

NEXTDIT_CONTEXT_DIM = 32
NEXTDIT_LATENT_CHANNELS = 16
PAD_MULTIPLE = 32  # Z-Image's caption and image pads


def lumina2_unet_config(layers: int = 2) -> dict[str, Any]:
    return dict(image_model="lumina2", patch_size=2, in_channels=NEXTDIT_LATENT_CHANNELS, dim=64, n_heads=2,
                n_kv_heads=1, axes_dims=[8, 12, 12], cap_feat_dim=NEXTDIT_CONTEXT_DIM, n_layers=layers,
                n_refiner_layers=1, qk_norm=True, multiple_of=16)


def z_image_unet_config(layers: int = 2) -> dict[str, Any]:
    return dict(image_model="lumina2", patch_size=2, in_channels=NEXTDIT_LATENT_CHANNELS, dim=256, n_heads=2,
                n_kv_heads=2, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512], rope_theta=256.0,
                ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0,
                pad_tokens_multiple=PAD_MULTIPLE, cap_feat_dim=NEXTDIT_CONTEXT_DIM, n_layers=layers,
                n_refiner_layers=1, qk_norm=True, multiple_of=16)


def has_z_image() -> bool:
    """Whether this ComfyUI has Z-Image (0.3.64 does not)."""
    ensure_comfyui()
    import comfy.supported_models

    return getattr(comfy.supported_models, "ZImage", None) is not None


def _patcher(model_config: Any, seed: int) -> comfy.model_patcher.ModelPatcher:
    import comfy.model_management as mm
    import comfy.model_patcher

    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def tiny_z_image_model(seed: int = 0, layers: int = 2) -> comfy.model_patcher.ModelPatcher:
    """Z-Image-shaped ModelPatcher (dim 256, two layers, one refiner layer each); needs ComfyUI ≥ 0.3.75."""
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.ZImage(z_image_unet_config(layers)), seed)


def tiny_lumina2_model(seed: int = 0, layers: int = 2) -> comfy.model_patcher.ModelPatcher:
    """Lumina-2-shaped ModelPatcher (dim 64, GQA 2 heads / 1 kv head, two layers)."""
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.Lumina2(lumina2_unet_config(layers)), seed)


def tiny_model(family: str, seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """The tiny model of family id ``z_image`` or ``lumina2``."""
    return tiny_z_image_model(seed) if family == "z_image" else tiny_lumina2_model(seed)


def text_mask(tokens: int) -> torch.Tensor:
    """An all-ones ``attention_mask`` [1, tokens], as the text encoders give. 0.3.64's Lumina 2 needs
    one (it computes ``num_tokens`` from it) and sums it over the batch, so it stays one row."""
    return torch.ones(1, tokens, dtype=torch.long)


def random_conditioning(batch: int = 1, tokens: int = 7, seed: int = 1) -> list:
    """A CONDITIONING [batch, tokens, 32] with its :func:`text_mask`."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, NEXTDIT_CONTEXT_DIM, generator=generator)
    return [[context, {"attention_mask": text_mask(tokens)}]]


def batch_conditioning(rows: list[int], tokens: int = 7) -> list:
    """A P2P-style positive: one random prompt per seed in ``rows`` (equal seeds = equal prompts)."""
    parts = [random_conditioning(tokens=tokens, seed=s)[0] for s in rows]
    return [[torch.cat([p[0] for p in parts]), {"attention_mask": text_mask(tokens)}]]
