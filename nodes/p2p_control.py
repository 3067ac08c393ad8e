"""P2P Attention Control: patch a MODEL so that a stock sampler performs the edit."""

from __future__ import annotations

from ..attention.clip_tokens import clip_words
from ..attention.comfy_patch import install
from ..attention.controller import PATHS
from ..attention.edit_spec import (
    EDIT_KINDS,
    SELF_ATTENTION_LAYERS,
    ControlSettings,
    P2PInputError,
    Window,
    build_plan,
    parse_word_windows,
)
from .common import CATEGORY_P2P, P2P_ATTENTION, P2P_EDIT


def _window(name: str, start: float, end: float) -> Window:
    if not 0.0 <= start <= end <= 1.0:
        raise P2PInputError(f"{name}: start {start} and end {end} must satisfy 0 <= start <= end <= 1")
    return Window(start, end)


class P2PAttentionControl:
    DESCRIPTION = (
        "Returns a patched copy of the MODEL that injects the source prompt's attention into the "
        "edited prompts while a stock KSampler / KSamplerAdvanced / SamplerCustomAdvanced samples the "
        "'P2P Prompts' batch. Deterministic samplers (euler, ddim) reproduce Prompt-to-Prompt exactly."
    )
    CATEGORY = CATEGORY_P2P
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", P2P_ATTENTION)
    RETURN_NAMES = ("model", "attention")
    OUTPUT_TOOLTIPS = (
        "The patched model; use it in the sampler that samples the 'P2P Prompts' batch.",
        "Handle on the attention maps recorded while sampling, for 'P2P Attention Maps'.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x, SD2.x or SDXL model."}),
                "p2p_edit": (P2P_EDIT, {"tooltip": "From 'P2P Prompts', optionally through Reweight / Local Blend."}),
                "edit": (list(EDIT_KINDS), {"default": "replace", "tooltip": "replace: swap words (spans may differ in length); refine: add words (aligned by global alignment); reweight: same prompt, only reweighting."}),
                "cross_attention_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Fraction of steps where cross-attention injection starts."}),
                "cross_attention_end": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Fraction of steps where cross-attention injection ends (higher keeps more of the source's layout)."}),
                "self_attention_end": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Fraction of steps with self-attention injection (0 = none, 1 = all steps)."}),
                "self_attention_layers": (list(SELF_ATTENTION_LAYERS), {"default": "coarse", "tooltip": "coarse: only the low-resolution layers, as Prompt-to-Prompt does; all: every self-attention layer."}),
            },
            "optional": {
                "word_windows": ("STRING", {"default": "", "multiline": False, "tooltip": "Per-word cross-attention windows overriding the above, e.g. 'dog=0.4, hat=0.1-0.6'."}),
                "clip": ("CLIP", {"tooltip": "Needed only with word_windows (to tokenise the words)."}),
                "attention_path": (list(PATHS), {"default": "fast", "tooltip": "fast: edits on the values through the fused attention kernel; reference: materialises attention maps as the paper does (slow, for checking)."}),
            },
        }

    def apply(self, model, p2p_edit, edit: str, cross_attention_start: float, cross_attention_end: float,
              self_attention_end: float, self_attention_layers: str, word_windows: str = "", clip=None,
              attention_path: str = "fast"):
        if edit not in EDIT_KINDS:
            raise P2PInputError(f"edit: {edit!r} is not one of {EDIT_KINDS}")
        if self_attention_layers not in SELF_ATTENTION_LAYERS:
            raise P2PInputError(f"self_attention_layers: {self_attention_layers!r} is not one of {SELF_ATTENTION_LAYERS}")
        if attention_path not in PATHS:
            raise P2PInputError(f"attention_path: {attention_path!r} is not one of {PATHS}")
        windows = ()
        if word_windows.strip():
            if clip is None:
                raise P2PInputError("word_windows: connect the CLIP input so the words can be tokenised")
            windows = parse_word_windows(word_windows, lambda w: clip_words(clip, w))
        settings = ControlSettings(
            kind=edit,
            cross_window=_window("cross_attention_start/end", cross_attention_start, cross_attention_end),
            word_windows=windows,
            self_window=_window("self_attention_end", 0.0, self_attention_end),
            self_layers=self_attention_layers,
        )
        patched, controller = install(model, build_plan(p2p_edit, settings), attention_path)
        return patched, controller
