"""Wan 2.1 / 2.2 text-to-video (and single-frame text-to-image): a transformer whose text meets the
video in real cross-attention, as in a UNet. Each block runs self-attention over all video tokens
(frames × patches), then video→text cross-attention over umT5's 512 columns.

Why a package of its own rather than ``joint/``: the joint edit (qk, image→text block of a joint
softmax) does not apply — the UNet controller does (:mod:`...attention.unet_controller`: replace,
refine, reweight on the cross-attention probabilities, self-attention injection, word maps). But
Wan has no UNet attn1/attn2 replace patches (its ``attn1_patch``/``attn2_patch`` are output hooks),
so the controller reaches its calls through the attention override (:mod:`.install`), as
``unet/`` holds the UNets' row and installer.

Matched: ``model_base.WAN21`` with the ``WAN21_T2V`` config (Wan 2.1 T2V 1.3B / 14B, and Wan 2.2
A14B's 16-channel experts, which detect as it) and ``model_base.WAN22`` with ``WAN22_T2V`` (the 5B,
48 channels). Both hosts (0.3.64, 0.33.0) have them; Wan's other model classes (I2V, VACE, camera,
S2V, Animate …) do not match and are refused by name.
"""

from __future__ import annotations

from ...attention.edit_spec import WAN_ENCODER
from ..registry import ATTENTION_OVERRIDE, CROSS_ATTENTION, ModelFamily, RefusedFamily

WAN = ModelFamily(
    id="wan", name="Wan 2.1 / 2.2 (text-to-video)", model_classes=("WAN21", "WAN22"),
    config_classes=("WAN21_T2V", "WAN22_T2V"), attention=CROSS_ATTENTION, route=ATTENTION_OVERRIDE,
    text_encoders=(WAN_ENCODER,), added_in="0.3.64")

WAN_OTHER = RefusedFamily(
    name="a Wan variant other than text-to-video (image-to-video, first-last-frame, Fun control …)",
    model_classes=("WAN21", "WAN22"),
    reason="its context begins with the input image's 257 CLIP-vision columns (or it concatenates image latents), "
           "which a Prompt-to-Prompt edit must never touch, and the pack edits Wan text-to-video (T2V) files only "
           "so far; load a Wan 2.1 / 2.2 T2V file")
