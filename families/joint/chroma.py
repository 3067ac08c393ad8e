"""Chroma: Flux.1's double and single blocks without per-block modulation (one approximator makes
every block's modulation; the dit wrapper's ``vec`` is a tuple of them, passed on untouched), a T5
context without padding, and real classifier-free guidance (its ``guidance`` input only feeds the
approximator). Chroma Radiance: the same transformer on 16×16 pixel patches of the RGB image,
decoded per patch by a NeRF MLP that does not see the text."""

from __future__ import annotations

from ...attention.edit_spec import T5_ENCODER
from ..registry import JOINT_ATTENTION, ModelFamily

CHROMA = ModelFamily(
    id="chroma", name="Chroma", model_classes=("Chroma", "ChromaRadiance"), attention=JOINT_ATTENTION,
    text_encoders=(T5_ENCODER,), blocks=(("double_blocks", "double_block"), ("single_blocks", "single_block")),
    added_in="0.3.64", updates_in_place=True)
