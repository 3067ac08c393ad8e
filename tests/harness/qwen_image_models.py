"""A tiny random-weight Qwen-Image built through ComfyUI's own class (families.md §6 recipe).

Two double-stream blocks of 2 heads × 16, a 32-wide context instead of Qwen2.5-VL's 3584 (the
text encoder itself is never built here: its vision tower alone is 3.8 GB), filled by
fill_random_ (query / key RMSNorm weights 3, so joint attention is not uniform). The latent is
Wan 2.1's 5-D ``[B, 16, 1, H, W]``; a 4-step euler on an 8×8 latent takes milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from harness.comfyui import ensure_comfyui
from harness.mmdit_models import _patcher

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher

QWEN_CONTEXT_DIM = 32
QWEN_LATENT_CHANNELS = 16


def qwen_image_unet_config(layers: int = 2) -> dict[str, Any]:
    return dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=QWEN_LATENT_CHANNELS,
                num_layers=layers, attention_head_dim=16, num_attention_heads=2,
                joint_attention_dim=QWEN_CONTEXT_DIM, axes_dims_rope=(4, 6, 6))


def tiny_qwen_image_model(seed: int = 0, layers: int = 2) -> comfy.model_patcher.ModelPatcher:
    """Qwen-Image-shaped ModelPatcher (``layers`` double blocks; about 150 k parameters)."""
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.QwenImage(qwen_image_unet_config(layers)), seed)


def random_conditioning(batch: int = 1, tokens: int = 7, seed: int = 1) -> list:
    """A CONDITIONING as Qwen-Image's text encoder gives one: context [batch, tokens, 32], nothing else."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, QWEN_CONTEXT_DIM, generator=generator), {}]]


def latent(batch: int, size: int = 16) -> torch.Tensor:
    """An empty 5-D latent [batch, 16, 1, size, size]."""
    return torch.zeros(batch, QWEN_LATENT_CHANNELS, 1, size, size)
