"""Qwen-Image (and -Edit): 60 double-stream blocks, each one joint attention over ``[text, image,
reference images …]`` tokens; Qwen2.5-VL context (no padding: cond and uncond of different lengths
run as separate forwards); real CFG; a 5-D latent ``[B, 16, 1, H, W]``.

Every host from 0.3.64 on calls a ``patches_replace["dit"]`` patch ``("double_block", i)`` around
each block of ``transformer_blocks`` (0.3.64: qwen_image/model.py, its ``_forward``'s block loop),
so the joint installer's block route serves both; what differs is the attention call the override
sees: 0.33.0 hands q, k, v as ``[B, H, L, D]`` (``skip_reshape=True``) with an additive ``(B, 1, L)``
mask when the text is padded, 0.3.64 as ``[B, L, H·D]`` with no mask. The edit reads the layout
from each call's ``skip_reshape``, and touches only the image tokens ``[T, T + N)``, never the
reference latents Qwen-Image-Edit appends after them."""

from __future__ import annotations

from ...attention.edit_spec import QWEN_IMAGE_ENCODER
from ..registry import JOINT_ATTENTION, ModelFamily

QWEN_IMAGE = ModelFamily(
    id="qwen_image", name="Qwen-Image", model_classes=("QwenImage",), attention=JOINT_ATTENTION,
    text_encoders=(QWEN_IMAGE_ENCODER,), blocks=(("transformer_blocks", "double_block"),), added_in="0.3.64")
