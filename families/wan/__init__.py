"""Wan 2.1 / 2.2 text-to-video and image-to-video (and single-frame text-to-image): a transformer
whose text meets the video in real cross-attention, as in a UNet. Each block runs self-attention
over all video tokens (frames × patches), then video→text cross-attention over umT5's 512 columns;
Wan 2.1 image-to-video adds, in the same cross-attention, a call whose keys are the input image's
CLIP-vision tokens (257 a picture), which the edit never touches.

Why a package of its own rather than ``joint/``: the joint edit (qk, image→text block of a joint
softmax) does not apply — the UNet controller does (:mod:`...attention.unet_controller`: replace,
refine, reweight on the cross-attention probabilities, self-attention injection, word maps). But
Wan has no UNet attn1/attn2 replace patches (its ``attn1_patch``/``attn2_patch`` are output hooks),
so the controller reaches its calls through the attention override (:mod:`.install`), as
``unet/`` holds the UNets' row and installer.

Matched: ``model_base.WAN21`` with the ``WAN21_T2V`` config (Wan 2.1 T2V 1.3B / 14B, and Wan 2.2
A14B's 16-channel experts, T2V and I2V, which detect as it) or the ``WAN21_I2V`` config (Wan 2.1
I2V 14B), and ``model_base.WAN22`` with ``WAN22_T2V`` (the 5B, 48 channels). Both hosts (0.3.64,
0.33.0) have them. Wan's other variants (first-last-frame, Fun control, VACE, camera, S2V, Animate
…) are refused naming the variant (:mod:`.variants`).
"""

from __future__ import annotations

from ...attention.edit_spec import WAN_ENCODER
from ..registry import ATTENTION_OVERRIDE, CROSS_ATTENTION, ModelFamily, RefusedFamily
from .variants import WAN_MODEL_CLASSES, is_edited_variant, wan_variant

WAN = ModelFamily(
    id="wan", name="Wan 2.1 / 2.2 (text- and image-to-video)", model_classes=("WAN21", "WAN22"),
    config_classes=("WAN21_T2V", "WAN21_I2V", "WAN22_T2V"), accepts=is_edited_variant, attention=CROSS_ATTENTION,
    route=ATTENTION_OVERRIDE, text_encoders=(WAN_ENCODER,), added_in="0.3.64")

WAN_OTHER = RefusedFamily(
    name="a Wan variant the pack does not edit", model_classes=WAN_MODEL_CLASSES, variant=wan_variant,
    reason="it adds inputs of its own (a last frame, control or VACE videos, camera, audio, faces, poses …) whose "
           "attention the Prompt-to-Prompt edit is not built for; the pack edits Wan text-to-video (T2V 1.3B / 14B, "
           "2.2 A14B, TI2V 5B) and image-to-video (2.1 I2V 14B, 2.2 A14B I2V) files: load one of those")
