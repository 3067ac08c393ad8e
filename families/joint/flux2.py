"""Flux.2 (dev, klein): Flux blocks (double, then single) with one global modulation for all blocks,
a 128-channel latent at patch 1, and a context the model left-pads with zeros to 512 columns (the
pads are attended; the text encoder's mask is dropped). A file with ``guidance_in`` is
guidance-distilled (sampled at cfg 1); one without (klein) runs real classifier-free guidance."""

from __future__ import annotations

from typing import Any

from ...attention.edit_spec import FLUX2_ENCODER
from ..registry import JOINT_ATTENTION, ModelFamily

FLUX2_TEXT_LENGTH = 512
"""Flux2.extra_conds left-pads a shorter context with zeros to this many columns."""


def has_guidance_embedding(model: Any) -> bool:
    """Whether the file is guidance-distilled (ComfyUI's detection: it has ``guidance_in``)."""
    params = getattr(model.model.diffusion_model, "params", None)
    return bool(getattr(params, "guidance_embed", False))


FLUX2 = ModelFamily(
    id="flux2", name="Flux.2", model_classes=("Flux2",), attention=JOINT_ATTENTION, text_encoders=(FLUX2_ENCODER,),
    blocks=(("double_blocks", "double_block"), ("single_blocks", "single_block")),
    real_cfg=lambda model: not has_guidance_embedding(model),
    cfg_note="this Flux.2 file is guidance-distilled: it has a guidance embedding and is sampled at cfg 1",
    added_in="0.3.72", updates_in_place=True, pads_text_left_to=FLUX2_TEXT_LENGTH)
