"""Z-Image and Lumina 2 (NextDiT): a text-only context refiner, an image-only noise refiner, then
single-stream layers of joint attention over ``[caption, image]``; real CFG (no guidance input).

Both are ``comfy.model_base.Lumina2``; Z-Image is the ``ZImage`` config (ComfyUI 0.3.75, the
Comfy-Org changelog: "Added Z Image model"), whose model pads the caption to a multiple of 32 with
a learned pad token and the image tokens, at their end, likewise. NextDiT reads no ``dit`` block
patches, so the edit reaches its attention through a ``DIFFUSION_MODEL`` wrapper
(:mod:`.wrapper_route`), which needs each call's layout: :func:`nextdit_layout`.
"""

from __future__ import annotations

from typing import Any

import torch

from ...attention.edit_spec import LUMINA2_ENCODER, Z_IMAGE_ENCODER
from ...attention.errors import P2PInputError
from ..registry import JOINT_ATTENTION, MODEL_WRAPPER, ModelFamily, UnsupportedModelError


def _round_up(n: int, multiple: int | None) -> int:
    return -(-n // multiple) * multiple if multiple else n


def nextdit_layout(diffusion_model: Any, args: tuple, kwargs: dict) -> tuple[int, int, int]:
    """``(context columns, text tokens, joint tokens)`` of one ``NextDiT.forward(x, timesteps,
    context, num_tokens, attention_mask, …)`` call: the joint layers attend over the caption (padded
    to ``pad_tokens_multiple`` where the model has one: Z-Image), then the image tokens (padded at
    their end likewise). Hosts whose NextDiT has no padding (0.3.64) cut the caption to
    ``num_tokens`` or to each row's attention mask."""
    x, context = args[0], args[2]
    num_tokens = args[3] if len(args) > 3 else kwargs.get("num_tokens")
    mask = args[4] if len(args) > 4 else kwargs.get("attention_mask")
    if kwargs.get("ref_latents") or kwargs.get("siglip_feats"):
        raise UnsupportedModelError(
            "P2P Attention Control: this Z-Image call has reference images (Z-Image Omni), whose tokens the edit "
            "cannot place; sample without reference latents")
    patch = int(getattr(diffusion_model, "patch_size", 2))
    image = _round_up(int(x.shape[-2]), patch) // patch * (_round_up(int(x.shape[-1]), patch) // patch)
    columns = int(context.shape[1])
    if hasattr(diffusion_model, "pad_tokens_multiple"):  # the caption is the whole context, padded
        multiple = diffusion_model.pad_tokens_multiple
        text = _round_up(columns, multiple)
        return columns, text, text + _round_up(image, multiple)
    if mask is not None:  # older NextDiT: each row's caption is its mask's length
        lengths = {int(n) for n in torch.as_tensor(mask).reshape(mask.shape[0], -1).sum(1).tolist()}
        if len(lengths) != 1:
            raise P2PInputError(
                "Prompt-to-Prompt: on this ComfyUI, Lumina 2 places each prompt's image after its own "
                f"unmasked text ({sorted(lengths)} tokens), so the prompts' image tokens do not line up; "
                "update ComfyUI or give every prompt the same length")
        columns = lengths.pop()
    elif num_tokens is not None:
        columns = min(columns, int(num_tokens))
    return columns, columns, columns + image


_NEXTDIT = dict(model_classes=("Lumina2",), attention=JOINT_ATTENTION, blocks=(("layers", "double_block"),),
                route=MODEL_WRAPPER, call_layout=nextdit_layout)

Z_IMAGE = ModelFamily(id="z_image", name="Z-Image", config_classes=("ZImage",), text_encoders=(Z_IMAGE_ENCODER,),
                      added_in="0.3.75", **_NEXTDIT)
LUMINA2 = ModelFamily(id="lumina2", name="Lumina 2", config_classes=("Lumina2",), text_encoders=(LUMINA2_ENCODER,),
                      added_in="0.3.64", **_NEXTDIT)
