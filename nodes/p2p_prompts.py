"""P2P Prompts: the source prompt and its edited versions as one batch sharing one initial noise."""

from __future__ import annotations

from ..attention.clip_tokens import encode_prompts
from ..attention.edit_spec import P2PEdit
from ..attention.errors import P2PInputError
from .common import CATEGORY_P2P, P2P_EDIT
from .input_guard import check_conditioning
from .latent_batch import repeat_latent


class P2PPrompts:
    DESCRIPTION = (
        "Encodes a source prompt and one or more edited prompts as one CONDITIONING batch "
        "(item 0 = source) and repeats the latent so that every item starts from the same noise. "
        "Feed both to a stock sampler together with the MODEL from 'P2P Attention Control'."
    )
    CATEGORY = CATEGORY_P2P
    FUNCTION = "build"
    RETURN_TYPES = ("CONDITIONING", "LATENT", P2P_EDIT)
    RETURN_NAMES = ("positive", "latent", "p2p_edit")
    OUTPUT_TOOLTIPS = (
        "Positive conditioning: item 0 = source prompt, then one item per edited prompt.",
        "The input latent repeated once per prompt, all items sharing the same initial noise.",
        "The prompts' token layout, for the edit nodes and 'P2P Attention Control'.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The text encoder of the model (SD1.x, SD2.x, SDXL, Flux.1, SD3, Chroma, Qwen-Image, "
                                           "HunyuanImage 2.1, Flux.2, Z-Image, Lumina 2 or Wan's umT5)."}),
                "latent": ("LATENT", {"tooltip": "Initial latent with one item (e.g. Empty Latent Image, "
                                                 "batch 1), or a latent from an inversion."}),
                "source": ("STRING", {
                    "multiline": True, "default": "a photo of a cat riding a bicycle",
                    "tooltip": "The source prompt: its image keeps its layout in every edit."}),
                "edits": ("STRING", {
                    "multiline": True, "default": "a photo of a dog riding a bicycle",
                    "tooltip": "Edited prompts, one per line; each becomes one more batch item."}),
            }
        }

    def build(self, clip, latent, source: str, edits: str):
        targets = [line.strip() for line in edits.splitlines() if line.strip()]
        if not source.strip():
            raise P2PInputError("source: the source prompt is empty; write the prompt of the image to keep")
        if not targets:
            raise P2PInputError("edits: write at least one edited prompt (one per line)")
        if clip is None:
            raise P2PInputError("clip: the checkpoint has no text encoder; load one with a CLIP loader")
        conditioning, tokens, encoder = encode_prompts(clip, [source.strip()] + targets)
        check_conditioning(conditioning, "P2P Prompts: source / edits")  # e.g. a weight '(cat:nan)'
        edit = P2PEdit(tokens[0], tuple(tokens[1:]), encoder=encoder)
        return conditioning, repeat_latent(latent, edit.batch_size), edit

