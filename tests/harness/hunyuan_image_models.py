"""Tiny random-weight HunyuanImage 2.1 models built through ComfyUI's own classes, and random
conditioning for them (no Qwen2.5-VL: the context is random, [B, T, HUNYUAN_CONTEXT_DIM]).

The config is what ``comfy.model_detection`` produces for a HunyuanImage 2.1 state dict (patch
[1, 1] on the 64-channel latent, two RoPE axes, theta 256, the ByT5 mapper), at CPU widths
(families.md §6): hidden 64, 2 heads, one double and two single blocks. ``guidance_embed`` says
whether the file has ``guidance_in`` (the guidance-distilled file, sampled at cfg 1) or not (real
CFG). The ByT5 mapper's input is ByT5-small's fixed 1472 channels.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from harness.comfyui import ensure_comfyui
from harness.tiny_models import fill_random_

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher

HUNYUAN_CONTEXT_DIM = 32
HUNYUAN_LATENT_CHANNELS = 64
BYT5_DIM = 1472  # ByT5-small's width: ByT5Mapper's fixed input


def hunyuan_image_unet_config(guidance_embed: bool = False, meanflow: bool = False, hidden: int = 64,
                              heads: int = 2, axes_dim: tuple[int, ...] = (16, 16)) -> dict[str, Any]:
    """A HunyuanImage 2.1 layout with one double and two single blocks (``axes_dim`` sums to
    hidden / heads; a file's are [64, 64] at 128 per head)."""
    import comfy.ldm.hunyuan_video.model as hunyuan

    config = dict(image_model="hunyuan_video", in_channels=HUNYUAN_LATENT_CHANNELS,
                  out_channels=HUNYUAN_LATENT_CHANNELS, patch_size=[1, 1], vec_in_dim=None,
                  context_in_dim=HUNYUAN_CONTEXT_DIM, hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=1,
                  depth_single_blocks=2, axes_dim=list(axes_dim), theta=256, qkv_bias=True,
                  guidance_embed=guidance_embed, byt5=True, meanflow=meanflow)
    # 0.33.0's params add HunyuanVideo 1.5's fields; 0.3.64's refuse them
    fields = {f.name for f in dataclasses.fields(hunyuan.HunyuanVideoParams)}
    newer = {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}
    config.update({k: v for k, v in newer.items() if k in fields})
    return config


def tiny_hunyuan_image_model(seed: int = 0, guidance_embed: bool = False,
                             **layout: Any) -> comfy.model_patcher.ModelPatcher:
    """HunyuanImage 2.1-shaped ModelPatcher (float32); ``guidance_embed``: the guidance-distilled
    file (``guidance_in``), else the real-CFG one; ``layout``: hunyuan_image_unet_config's others."""
    ensure_comfyui()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.HunyuanImage21(
        hunyuan_image_unet_config(guidance_embed=guidance_embed, **layout))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def random_conditioning(batch: int = 1, tokens: int = 8, seed: int = 1, byt5_tokens: int = 0,
                        guidance: float | None = None) -> list:
    """A CONDITIONING: Qwen context [batch, tokens, 32], with ``byt5_tokens`` > 0 a ByT5 context
    ``conditioning_byt5small`` [batch, byt5_tokens, 1472] (a prompt with quoted text), optionally
    the guidance-distilled file's ``guidance``."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, HUNYUAN_CONTEXT_DIM, generator=generator)
    extra: dict[str, Any] = {}
    if byt5_tokens:
        extra["conditioning_byt5small"] = torch.randn(batch, byt5_tokens, BYT5_DIM, generator=generator)
    if guidance is not None:
        extra["guidance"] = guidance
    return [[context, extra]]
