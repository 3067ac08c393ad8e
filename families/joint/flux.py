"""Flux.1 (dev, schnell, Kontext): 19 double blocks over separate text and image streams, then 38
single blocks over ``[text, image]`` as one stream; T5 context (CLIP-L only gives the pooled vector).
Guidance-distilled: it is sampled at cfg 1 with a guidance embedding, so it runs no unconditional
pass and the null-text methods do not apply."""

from __future__ import annotations

from ...attention.edit_spec import T5_ENCODER
from ..registry import JOINT_ATTENTION, ModelFamily

FLUX = ModelFamily(
    id="flux", name="Flux.1", model_classes=("Flux",), attention=JOINT_ATTENTION, text_encoders=(T5_ENCODER,),
    blocks=(("double_blocks", "double_block"), ("single_blocks", "single_block")),
    real_cfg=lambda model: False, cfg_note="Flux is guidance-distilled and sampled at cfg 1", added_in="0.3.64")
