"""Evaluation node: the paper's metrics for edits and variations, as numbers and a table image."""

from __future__ import annotations

import folder_paths
import torch

from ..base.errors import PromptEditError
from ..base.word_lists import split_word_list
from ..evaluation.clip_features import clip_image_features, clip_text_features
from ..evaluation.lpips import LPIPS, LPIPSFileError
from ..evaluation.metrics import (
    evaluate,
    markdown_table,
    table_image,
    zero_shot_classifier,
)
from .common import CATEGORY_ROOT, register_model_folder

LPIPS_FOLDER = register_model_folder("lpips")
NONE = "none"
_LOADED: dict[str, LPIPS] = {}


def load_lpips(name: str) -> LPIPS:
    path = folder_paths.get_full_path(LPIPS_FOLDER, name)
    if path is None:
        raise LPIPSFileError(f"lpips_model: {name!r} is not in models/{LPIPS_FOLDER}/; put VGG-16 weights (and "
                             "LPIPS's lin heads) there as safetensors, or choose 'none'")
    if path not in _LOADED:
        try:
            _LOADED[path] = LPIPS.load(path)
        except LPIPSFileError as e:
            raise LPIPSFileError(f"lpips_model: {e}") from None
    return _LOADED[path]


class EditMetrics:
    DESCRIPTION = (
        "The stochastic-embedding paper's metrics for edits or variations against the source image: PSNR "
        "and SSIM; CLIP-I (to the source) and CLIP-T (to the prompt) with a local CLIP vision model; LPIPS "
        "to the source, the mean pairwise LPIPS among the variations (diversity) and, with the plain edit, "
        "eq. 5's upper bound LPIPS(source, edit); a class score (CLIP zero-shot over class prompts). Nothing "
        "is downloaded: give the models you have."
    )
    CATEGORY = f"{CATEGORY_ROOT}/evaluation"
    FUNCTION = "measure"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("table", "table_image")
    OUTPUT_TOOLTIPS = ("The metrics as a markdown table.", "The metrics as a small image.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The edits or variations (I'')."}),
                "reference": ("IMAGE", {"tooltip": "The source image (I), same size."}),
                "lpips_model": ([NONE] + folder_paths.get_filename_list(LPIPS_FOLDER), {"tooltip": (
                    "VGG-16 (+ LPIPS heads) weights in models/lpips/, or none.")}),
                "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": (
                    "For CLIP-T: the edit prompt (needs clip and clip_vision).")}),
            },
            "optional": {
                "edit": ("IMAGE", {"tooltip": (
                    "The plain edit (I') without variation: adds eq. 5's bound LPIPS(I, I').")}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "From Load CLIP Vision: CLIP-I and CLIP-T."}),
                "clip": ("CLIP", {"tooltip": (
                    "The text encoder matching clip_vision, for CLIP-T and the class score.")}),
                "classes": ("STRING", {"default": "", "tooltip": (
                    "Class score: comma-separated class prompts, the target first "
                    "(e.g. 'a dog, a cat, a fox'); CLIP zero-shot over them.")}),
            },
        }

    def measure(self, images, reference, lpips_model: str, prompt: str, edit=None, clip_vision=None, clip=None,
                classes: str = ""):
        class_names = split_word_list(classes)
        for name, wanted in (("prompt", prompt.strip()), ("classes", class_names)):
            if wanted and (clip is None or clip_vision is None):
                raise PromptEditError(f"{name}: needs both clip and clip_vision connected (or clear {name})")
        if len(class_names) == 1:
            raise PromptEditError("classes: give the target class and at least one other, comma-separated")
        lpips = None if lpips_model == NONE else load_lpips(lpips_model)
        image_features = clip_image_features(clip_vision) if clip_vision is not None else None
        with torch.inference_mode():
            text = clip_text_features(clip, prompt) if prompt.strip() else None
            classifier = (zero_shot_classifier(image_features, torch.cat([clip_text_features(clip, c) for c in class_names]))
                          if class_names else None)
            rows = evaluate(images, reference, edit, lpips, image_features, text, classifier)
        table = markdown_table(rows)
        return {"ui": {"text": [table]}, "result": (table, table_image(rows))}
