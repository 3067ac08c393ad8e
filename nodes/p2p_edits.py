"""Edits that refine a P2P_EDIT: attention reweighting and local blend (chainable)."""

from __future__ import annotations

import math

from ..attention.clip_tokens import clip_words
from ..attention.edit_spec import LocalBlend, Reweight
from ..attention.errors import P2PInputError
from ..attention.word_input import checked_words
from ..base.word_lists import split_word_list
from .common import CATEGORY_P2P, P2P_EDIT


class P2PReweight:
    DESCRIPTION = (
        "Scales the cross-attention of words of the edited prompts (Prompt-to-Prompt reweighting): "
        ">1 strengthens a word, 0..1 weakens it, negative values push it away. Chain several, and "
        "chain after a replace or refine edit."
    )
    CATEGORY = CATEGORY_P2P
    FUNCTION = "reweight"
    RETURN_TYPES = (P2P_EDIT,)
    RETURN_NAMES = ("p2p_edit",)
    OUTPUT_TOOLTIPS = ("The edit with this reweighting added.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "p2p_edit": (P2P_EDIT, {"tooltip": "From 'P2P Prompts' or another P2P edit node."}),
                "clip": ("CLIP", {"tooltip": "The same CLIP as in 'P2P Prompts' (to tokenise the words)."}),
                "words": ("STRING", {
                    "default": "smiling",
                    "tooltip": "Words of the edited prompts to reweight, comma separated (a word may be "
                               "several, e.g. 'teddy bear')."}),
                "weight": ("FLOAT", {"default": 2.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                     "tooltip": "Attention scale for these words (1 = unchanged)."}),
            }
        }

    def reweight(self, p2p_edit, clip, words: str, weight: float):
        if not math.isfinite(weight):
            raise P2PInputError("weight: must be a finite number")
        entries = split_word_list(words)
        if not entries:
            raise P2PInputError("words: name at least one word of the edited prompts to reweight")
        edit = p2p_edit
        for seq in checked_words(entries, lambda w: clip_words(clip, w), "words"):
            edit = edit.with_reweight(Reweight(seq, float(weight)))
        return (edit,)


class P2PLocalBlend:
    DESCRIPTION = (
        "Confines the edit to the regions of the named words (Prompt-to-Prompt local blend): outside "
        "the union of the source words' and edited words' attention masks, the edited images keep "
        "the source image. A video (Wan) gets one mask per frame, optionally smoothed along time."
    )
    CATEGORY = CATEGORY_P2P
    FUNCTION = "blend"
    RETURN_TYPES = (P2P_EDIT,)
    RETURN_NAMES = ("p2p_edit",)
    OUTPUT_TOOLTIPS = ("The edit with local blending.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "p2p_edit": (P2P_EDIT, {"tooltip": "From 'P2P Prompts' or another P2P edit node."}),
                "clip": ("CLIP", {"tooltip": "The same CLIP as in 'P2P Prompts' (to tokenise the words)."}),
                "source_words": ("STRING", {
                    "default": "cat",
                    "tooltip": "Words of the source prompt whose region may change, comma separated."}),
                "target_words": ("STRING", {
                    "default": "dog",
                    "tooltip": "Words of the edited prompts whose region may change, comma separated "
                               "(each edited prompt must contain one)."}),
                "threshold": ("FLOAT", {
                    "default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Mask threshold on the normalised attention map (Prompt-to-Prompt uses 0.3)."}),
                "start": ("FLOAT", {
                    "default": 0.2, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Fraction of steps before blending starts (lets the edited object take "
                               "shape)."}),
            },
            "optional": {
                "temporal_smoothing": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 16.0, "step": 0.1,
                    "tooltip": "Video models (Wan): how far, in latent frames (σ of a Gaussian), a frame's "
                               "mask reaches into its neighbours before the threshold (a Gaussian-weighted "
                               "maximum over the frames), so the edited region does not flicker where the "
                               "word's attention dips for a frame. 0 = each frame's own mask; images are "
                               "never smoothed."}),
            },
        }

    def blend(self, p2p_edit, clip, source_words: str, target_words: str, threshold: float, start: float,
              temporal_smoothing: float = 0.0):
        tokenize = lambda w: clip_words(clip, w)  # noqa: E731
        src, tgt = split_word_list(source_words), split_word_list(target_words)
        if not src and not tgt:
            raise P2PInputError(
                "source_words / target_words: name the words whose region the edit may change")
        if temporal_smoothing < 0:
            raise P2PInputError(
                f"temporal_smoothing: {temporal_smoothing} is negative; give 0 (no smoothing) or a reach in frames")
        blend = LocalBlend(
            checked_words(src, tokenize, "source_words"),
            checked_words(tgt, tokenize, "target_words"),
            float(threshold),
            float(start),
            float(temporal_smoothing),
        )
        return (p2p_edit.with_local_blend(blend),)
