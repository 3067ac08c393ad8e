"""P2P Prompts: the source prompt and its edited versions as one batch sharing one initial noise;
P2P Prompts (Qwen-Image-Edit): the same after the input pictures, as Qwen-Image-Edit reads them."""

from __future__ import annotations

from ..attention.clip_tokens import VisionPrompt, encode_prompts
from ..attention.edit_spec import P2PEdit
from ..attention.errors import P2PInputError
from ..families.joint.qwen_image import EDIT_LAYOUTS, edit_pictures, edit_reference_latents
from .common import CATEGORY_P2P, P2P_EDIT
from .input_guard import check_conditioning
from .latent_batch import repeat_latent


def _text(default: str, tooltip: str) -> tuple:
    return ("STRING", {"multiline": True, "default": default, "tooltip": tooltip})


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
                "source": _text("a photo of a cat riding a bicycle",
                                "The source prompt: its image keeps its layout in every edit."),
                "edits": _text("a photo of a dog riding a bicycle",
                               "Edited prompts, one per line; each becomes one more batch item."),
            }
        }

    def build(self, clip, latent, source: str, edits: str):
        return _build(clip, latent, source, edits)


def _build(clip, latent, source: str, edits: str, vision: VisionPrompt | None = None):
    targets = [line.strip() for line in edits.splitlines() if line.strip()]
    if not source.strip():
        raise P2PInputError("source: the source prompt is empty; write the prompt of the image to keep")
    if not targets:
        raise P2PInputError("edits: write at least one edited prompt (one per line)")
    if clip is None:
        raise P2PInputError("clip: the checkpoint has no text encoder; load one with a CLIP loader")
    conditioning, tokens, encoder = encode_prompts(clip, [source.strip()] + targets, vision)
    check_conditioning(conditioning, "P2P Prompts: source / edits")  # e.g. a weight '(cat:nan)'
    edit = P2PEdit(tokens[0], tuple(tokens[1:]), encoder=encoder)
    return conditioning, repeat_latent(latent, edit.batch_size), edit


class P2PPromptsQwenImageEdit:
    DESCRIPTION = (
        "P2P Prompts for Qwen-Image-Edit: encodes the source instruction and the edited ones after the input "
        "pictures, exactly as TextEncodeQwenImageEdit / TextEncodeQwenImageEditPlus do (so the words you name in "
        "P2P Local Blend or P2P Reweight are found after the pictures' vision columns), and with a VAE adds the "
        "pictures as reference latents. Item 0 = source; the latent is repeated once per prompt."
    )
    CATEGORY = CATEGORY_P2P
    FUNCTION = "build"
    RETURN_TYPES = P2PPrompts.RETURN_TYPES
    RETURN_NAMES = P2PPrompts.RETURN_NAMES
    OUTPUT_TOOLTIPS = P2PPrompts.OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        prompts = P2PPrompts.INPUT_TYPES()["required"]
        picture = ("IMAGE", {"tooltip": "A picture the instruction refers to (Picture n in the prompt)."})
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "Qwen-Image's text encoder (Qwen2.5-VL 7B, CLIP loader type qwen_image)."}),
                "latent": prompts["latent"],
                "source": _text("keep the photo as it is",
                                "The source instruction: with an inverted photo, the instruction the inversion used."),
                "edits": _text("put a red hat on the cat",
                               "Edited instructions, one per line; each becomes one more batch item."),
                "layout": (list(EDIT_LAYOUTS), {
                    "default": EDIT_LAYOUTS[0],
                    "tooltip": "How the pictures enter the prompt: as TextEncodeQwenImageEditPlus (Qwen-Image-Edit "
                               "2509 / 2511: up to three pictures at 384², 'Picture n:' before each) or as "
                               "TextEncodeQwenImageEdit (the first Qwen-Image-Edit: image1 at 1024²)."}),
            },
            "optional": {
                "vae": ("VAE", {"tooltip": "With a VAE, the pictures are also added as reference latents (as the "
                                           "stock nodes do); without, add them with ReferenceLatent."}),
                "image1": picture, "image2": picture, "image3": picture,
            },
        }

    def build(self, clip, latent, source: str, edits: str, layout: str, vae=None, image1=None, image2=None, image3=None):
        images = [image1, image2, image3]
        if all(image is None for image in images):
            raise P2PInputError("image1: connect the picture to edit (for prompts without pictures use P2P Prompts)")
        if clip is None:
            raise P2PInputError("clip: the checkpoint has no text encoder; load one with a CLIP loader")
        conditioning, latent, edit = _build(clip, latent, source, edits, edit_pictures(clip, images, layout))
        if vae is not None:
            references = edit_reference_latents(vae, images, layout)
            conditioning = [[c, {**extra, "reference_latents": extra.get("reference_latents", []) + references}]
                            for c, extra in conditioning]
        return conditioning, latent, edit

