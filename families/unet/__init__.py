"""SD1.x, SD2.x and SDXL: UNets whose text meets the image in cross-attention (attn2) layers, which
ComfyUI's attn1/attn2 replace patches reach. Recognised by structure rather than class: every
UNet checkpoint class (SD1.x, SD2.x v-prediction, SDXL, SDXL refiner, inpainting …) has it."""

from __future__ import annotations

from typing import Any

from ...attention.edit_spec import CLIP_ENCODER
from ..registry import CROSS_ATTENTION, ModelFamily


def has_unet_cross_attention(model: Any) -> bool:
    """Whether the model is a UNet with ComfyUI's input/middle/output blocks (SD1.x, SD2.x, SDXL)."""
    unet = getattr(model.model, "diffusion_model", None)
    return all(hasattr(unet, a) for a in ("input_blocks", "middle_block", "output_blocks"))


UNET = ModelFamily(id="sd", name="SD1.x / SD2.x / SDXL", model_classes=("BaseModel", "SDXL"),
                   attention=CROSS_ATTENTION, text_encoders=(CLIP_ENCODER,), recognises=has_unet_cross_attention)
