"""Qwen-Image (and -Edit): 60 double-stream blocks, each one joint attention over ``[text, image,
reference images …]`` tokens; Qwen2.5-VL context (no padding: cond and uncond of different lengths
run as separate forwards); real CFG; a 5-D latent ``[B, 16, 1, H, W]``.

Every host from 0.3.64 on calls a ``patches_replace["dit"]`` patch ``("double_block", i)`` around
each block of ``transformer_blocks`` (0.3.64: qwen_image/model.py, its ``_forward``'s block loop),
so the joint installer's block route serves both; what differs is the attention call the override
sees: 0.33.0 hands q, k, v as ``[B, H, L, D]`` (``skip_reshape=True``) with an additive ``(B, 1, L)``
mask when the text is padded, 0.3.64 as ``[B, L, H·D]`` with no mask. The edit reads the layout
from each call's ``skip_reshape``, and touches only the image tokens ``[T, T + N)``, never the
reference latents Qwen-Image-Edit appends after them.

Qwen-Image-Edit also reads the input pictures inside the prompt (vision tokens before the user's
words); :func:`edit_pictures` lays them out as ComfyUI's TextEncodeQwenImageEdit(Plus) do, for P2P
Prompts (Qwen-Image-Edit), whose words then sit after the pictures' columns."""

from __future__ import annotations

import math
from typing import Any

import torch

from ...attention.clip_tokens import VisionPrompt
from ...attention.edit_spec import QWEN_IMAGE_ENCODER
from ...attention.errors import P2PInputError
from ..registry import JOINT_ATTENTION, ModelFamily

QWEN_IMAGE = ModelFamily(
    id="qwen_image", name="Qwen-Image", model_classes=("QwenImage",), attention=JOINT_ATTENTION,
    text_encoders=(QWEN_IMAGE_ENCODER,), blocks=(("transformer_blocks", "double_block"),), added_in="0.3.64")


# --- Qwen-Image-Edit's prompts: the input pictures inside the text (host code: ComfyUI's resize) ---

VISION = "<|vision_start|><|image_pad|><|vision_end|>"
EDIT_LAYOUTS = ("edit plus (2509, 2511)", "edit")
"""As ComfyUI's TextEncodeQwenImageEditPlus (up to three pictures, each "Picture n: " + its vision
tokens, read at 384² pixels) and TextEncodeQwenImageEdit (one picture, read at 1024²)."""


def qwen_vl_columns(height: int, width: int, patch: int = 14, merge: int = 2,
                    min_pixels: int = 3136, max_pixels: int = 12845056) -> int:
    """The conditioning columns Qwen2.5-VL gives a picture of ``height`` × ``width``: its processor
    resizes to multiples of ``patch · merge`` within [min_pixels, max_pixels] pixels, and its
    vision tower merges each 2×2 of 14-pixel patches into one column (``qwen_vl.process_qwen2vl_images``;
    P2P Prompts checks the count against the conditioning it gets)."""
    factor = patch * merge
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(factor, math.floor(height / beta / factor) * factor), max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return (h // patch) * (w // patch) // (merge * merge)


def _resized(image: torch.Tensor, pixels: int, multiple: int = 1) -> torch.Tensor:
    """``image`` [B, H, W, C] scaled (area) to about ``pixels`` pixels, sides rounded as the stock nodes do."""
    import comfy.utils

    samples = image.movedim(-1, 1)
    scale = math.sqrt(pixels / (samples.shape[3] * samples.shape[2]))
    width, height = (round(n * scale / multiple) * multiple for n in (samples.shape[3], samples.shape[2]))
    return comfy.utils.common_upscale(samples, width, height, "area", "disabled").movedim(1, -1)


def edit_pictures(clip: Any, images: list[torch.Tensor | None], layout: str) -> VisionPrompt:
    """The pictures of a Qwen-Image-Edit prompt, laid out as ``layout`` (one of EDIT_LAYOUTS) does."""
    template = getattr(getattr(clip, "tokenizer", None), "llama_template_images", None)
    if template is None or VISION not in template:
        raise P2PInputError("image1: pictures in the prompt need Qwen-Image's text encoder (Qwen2.5-VL); load "
                            "qwen_2.5_vl_7b with a CLIP loader of type qwen_image")
    template = template.replace(VISION, "")  # the pictures go into the user's part, before the prompt
    given = [(i, image) for i, image in enumerate(images) if image is not None]
    if layout == EDIT_LAYOUTS[1]:
        if [i for i, _ in given] != [0]:
            raise P2PInputError(f"layout '{layout}' reads one picture, image1; connect only image1, or use "
                                f"'{EDIT_LAYOUTS[0]}' for several")
        pictures = [_resized(given[0][1], 1024 * 1024)[..., :3]]
        prefix = VISION
    else:
        pictures = [_resized(image, 384 * 384) for _, image in given]
        prefix = "".join(f"Picture {i + 1}: {VISION}" for i, _ in given)
    columns = tuple(qwen_vl_columns(p.shape[1], p.shape[2]) for p in pictures)
    return VisionPrompt(template, prefix, tuple(pictures), columns)


def edit_reference_latents(vae: Any, images: list[torch.Tensor | None], layout: str) -> list[torch.Tensor]:
    """The reference latents the stock node would add with a VAE: image1 at 1024² (edit), each
    picture at 1024² with sides a multiple of 8 (edit plus)."""
    if layout == EDIT_LAYOUTS[1]:
        return [vae.encode(_resized(images[0], 1024 * 1024)[..., :3])]
    return [vae.encode(_resized(image, 1024 * 1024, multiple=8)[..., :3]) for image in images if image is not None]
