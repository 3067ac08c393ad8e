"""Which Wan variant a ComfyUI Wan model is, named as a user knows it, and whether the pack edits it.

ComfyUI builds most Wan variants as ``model_base.WAN21`` (or a subclass) and tells them apart by
their ``comfy.supported_models`` config; a few share a config and differ only in their weights:

- ``WAN21_T2V`` is Wan 2.1 text-to-video with 16 input channels, and also every 16-channel Wan 2.2
  A14B expert: the I2V experts have no CLIP-vision embedding (``img_emb``), so they detect as it
  with 36 input channels (the noisy latent, then a 4-channel mask and the 16-channel image latent
  that ``WanImageToVideo`` sets, concatenated by ``WAN21.concat_cond``). Other widths are the Fun
  control / inpaint models' concatenated control videos.
- ``WAN21_I2V`` is Wan 2.1 image-to-video, and also first-last-frame (FLF2V), whose ``img_emb``
  has position embeddings (``emb_pos``) for the two images' CLIP-vision tokens.

Edited: text-to-video and image-to-video, whose blocks call the attention as the pack expects
(:mod:`.install`). The others add streams of their own (control videos, VACE blocks, camera
adapters, audio, faces, poses …) and are refused by name.
"""

from __future__ import annotations

from typing import Any

TEXT_TO_VIDEO, IMAGE_TO_VIDEO = "text-to-video", "image-to-video"
EDITED_VARIANTS = (TEXT_TO_VIDEO, IMAGE_TO_VIDEO)

I2V_CHANNELS = 16 + 4 + 16  # the noisy latent, the mask, the image latent (Wan 2.1 I2V, Wan 2.2 A14B I2V)

_BY_CONFIG = {
    "WAN21_FunControl2V": "Fun control",
    "WAN21_Camera": "camera control",
    "WAN22_Camera": "camera control",
    "WAN21_Vace": "VACE",
    "WAN21_HuMo": "HuMo",
    "WAN22_S2V": "speech-to-video (S2V)",
    "WAN22_Animate": "Animate",
    "WAN_Animate2": "Animate",
    "WAN21_CausalAR_T2V": "causal autoregressive text-to-video",
    "WAN21_FlowRVS": "FlowRVS",
    "WAN21_SCAIL": "SCAIL",
    "WAN21_SCAIL2": "SCAIL",
    "WAN22_WanDancer": "WanDancer",
}
"""Configs that are one variant each, whatever their weights."""

WAN_MODEL_CLASSES = ("WAN21", "WAN22", "WAN21_Vace", "WAN21_Camera", "WAN21_HuMo", "WAN22_Animate", "WAN_Animate2",
                     "WAN22_S2V", "WAN21_CausalAR", "WAN21_FlowRVS", "WAN21_SCAIL", "WAN21_SCAIL2", "WAN22_WanDancer")
"""Every ``comfy.model_base`` Wan class of 0.3.64 … 0.33.0 (a host lacks some: they are looked up by name)."""


def wan_variant(model: Any) -> str:
    """The variant of a Wan MODEL (a ``ModelPatcher``): one of :data:`EDITED_VARIANTS` or a name to
    refuse it by."""
    config = type(getattr(model.model, "model_config", None)).__name__
    diffusion_model = model.model.diffusion_model
    in_dim = int(getattr(diffusion_model, "in_dim", 0))
    if config in _BY_CONFIG:
        return _BY_CONFIG[config]
    if config == "WAN21_T2V":
        if in_dim == 16:
            return TEXT_TO_VIDEO
        if in_dim == I2V_CHANNELS:  # Wan 2.2 A14B I2V expert (or Fun inpaint: the same inputs, start image first)
            return IMAGE_TO_VIDEO
        return f"Fun control (a {in_dim}-channel input)"
    if config == "WAN21_I2V":
        if getattr(getattr(diffusion_model, "img_emb", None), "emb_pos", None) is not None:
            return "first-last-frame (FLF2V)"
        return IMAGE_TO_VIDEO
    if config == "WAN22_T2V":  # the TI2V 5B: 48 channels in and out (its image-to-video is a masked latent)
        return TEXT_TO_VIDEO if in_dim == int(getattr(diffusion_model, "out_dim", in_dim)) else \
            f"Fun control (a {in_dim}-channel input)"
    return f"an unknown Wan variant (config {config})"


def is_edited_variant(model: Any) -> bool:
    """Whether the pack edits this Wan model's variant (text- or image-to-video)."""
    return wan_variant(model) in EDITED_VARIANTS
