"""HunyuanImage 2.1 (``HunyuanImage21``): Flux-style double and single blocks on a 64-channel latent
(/32, patch [1, 1]). The text is Qwen2.5-VL's, refined by a text-only TokenRefiner (two
self-attention blocks over the text, run before the joint blocks with the model's own options, so
no edit reaches them), then quoted text's ByT5 tokens are appended: the block's ``txt`` is
``[qwen, byt5]``, so the P2P prompts' columns must count both. ComfyUI 0.33.0 runs the joint
attention as ``[text, image]`` and names ``img_slice`` in the single blocks; 0.3.64 runs it as
``[image, text]`` (its double blocks' ``flipped_img_txt``), which the installer turns around for
the edit (:mod:`...attention.joint_order`), and there the single blocks take the last double
block's text length.

CFG: a file with ``guidance_in`` is guidance-distilled (sampled at cfg 1 with a guidance embedding);
one without runs real classifier-free guidance, so the null-text methods apply to it only. Its
single blocks add their output into their input in place, which autograd (null-text optimisation)
survives only by keeping copies of what it saved (``updates_in_place``).
"""

from __future__ import annotations

from typing import Any

from ...attention.edit_spec import HUNYUAN_IMAGE_ENCODER
from ..registry import JOINT_ATTENTION, ModelFamily


def _runs_real_cfg(model: Any) -> bool:
    """No guidance embedding in the file (model_detection sets ``guidance_embed`` from ``guidance_in``)."""
    return not getattr(model.model.diffusion_model.params, "guidance_embed", False)


def _image_first(model: Any) -> bool:
    blocks = model.model.diffusion_model.double_blocks
    return len(blocks) > 0 and bool(getattr(blocks[0], "flipped_img_txt", False))


HUNYUAN_IMAGE = ModelFamily(
    id="hunyuan_image", name="HunyuanImage 2.1", model_classes=("HunyuanImage21",), attention=JOINT_ATTENTION,
    text_encoders=(HUNYUAN_IMAGE_ENCODER,), blocks=(("double_blocks", "double_block"), ("single_blocks", "single_block")),
    real_cfg=_runs_real_cfg, cfg_note="this HunyuanImage 2.1 file is guidance-distilled (it has a guidance "
                                      "embedding) and is sampled at cfg 1",
    added_in="0.3.64", image_first=_image_first, updates_in_place=True)
