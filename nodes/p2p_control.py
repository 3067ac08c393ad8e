"""P2P Attention Control: patch a MODEL so that a stock sampler performs the edit."""

from __future__ import annotations

from ..attention.clip_tokens import clip_words
from ..attention.unet_controller import PATHS
from ..attention.edit_plan import align_plan
from ..attention.edit_spec import EDIT_KINDS, SELF_ATTENTION_LAYERS, ControlSettings
from ..attention.errors import P2PInputError
from ..attention.mmdit_blocks import ALL_BLOCKS, select_blocks
from ..attention.mmdit_edit import (
    MMDIT_MECHANISMS, PROBABILITIES_MECHANISM, QK_END_DEFAULT, QK_MECHANISM, QKSettings, check_mmdit_request)
from ..attention.step_window import Window
from ..attention.word_input import parse_word_windows
from ..families import family_of
from ..families.joint.install import install_probabilities, install_qk
from ..families.unet.install import install
from ..families.wan.install import install as install_wan
from .common import CATEGORY_P2P, P2P_ATTENTION, P2P_EDIT

JOINT_MODELS = "Joint-attention models (Flux, Flux.2, SD3, Qwen-Image, Chroma, Z-Image, Lumina 2, HunyuanImage 2.1)"


def _window(inputs: str, start: float, end: float) -> Window:
    """The step window of the node's ``inputs``; the core checks it, the message names them."""
    try:
        return Window(start, end)
    except P2PInputError as e:
        raise P2PInputError(f"{inputs}: {e}") from None


def _fraction(default: float, tooltip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": tooltip})


class P2PAttentionControl:
    DESCRIPTION = (
        "Returns a patched copy of the MODEL that injects the source prompt's attention into the "
        "edited prompts while a stock KSampler / KSamplerAdvanced / SamplerCustomAdvanced samples the "
        "'P2P Prompts' batch. With a deterministic sampler (euler, ddim) this is Prompt-to-Prompt's "
        "algorithm, apart from the few deliberate differences the pack's README lists. On Flux and "
        "SD3 / SD3.5 the edit gives the edited prompts the source's image queries and keys for the "
        "first qk_end of the steps (Shin et al., ICCV 2025), or, with mmdit_mechanism 'probabilities', "
        "edits the image→text attention probabilities of the joint attention as Prompt-to-Prompt edits "
        "a UNet's cross-attention, in the blocks mmdit_blocks names; the self-attention inputs are for "
        "SD1.x, SD2.x and SDXL."
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
                "model": ("MODEL", {"tooltip": "An SD1.x, SD2.x, SDXL, Flux (dev, schnell) or SD3 / SD3.5 model, one of the newer "
                                            "joint-attention families, or Wan 2.1 / 2.2 text- or image-to-video (edited as a UNet; an "
                                            "I2V model's CLIP-vision image attention is never edited)."}),
                "p2p_edit": (P2P_EDIT, {
                    "tooltip": "From 'P2P Prompts', optionally through Reweight / Local Blend."}),
                "edit": (list(EDIT_KINDS), {
                    "default": "replace",
                    "tooltip": "replace: swap words (spans may differ in length); refine: add words "
                               "(aligned by global alignment); reweight: same prompt, only reweighting. "
                               f"{JOINT_MODELS}: replace (any prompt change) with mmdit_mechanism 'qk'; "
                               "all three with 'probabilities'."}),
                "cross_attention_start": _fraction(
                    0.0, "SD1.x, SD2.x, SDXL (and joint-attention models with mmdit_mechanism 'probabilities'): "
                         "fraction of steps where cross-attention injection starts."),
                "cross_attention_end": _fraction(
                    0.8, "SD1.x, SD2.x, SDXL (and joint-attention models with 'probabilities'): fraction of "
                         "steps where cross-attention injection ends "
                         "(higher keeps more of the source's layout)."),
                "self_attention_end": _fraction(
                    0.4, "SD1.x, SD2.x, SDXL: fraction of steps with self-attention injection (0 = none, "
                         "1 = all steps)."),
                "self_attention_layers": (list(SELF_ATTENTION_LAYERS), {
                    "default": "coarse",
                    "tooltip": "SD1.x, SD2.x, SDXL: coarse: only the low-resolution layers, as "
                               "Prompt-to-Prompt does; all: every self-attention layer."}),
            },
            "optional": {
                "word_windows": ("STRING", {
                    "default": "", "multiline": False,
                    "tooltip": "Per-word cross-attention windows overriding the above, e.g. "
                               "'dog=0.4, hat=0.1-0.6' (joint-attention models: with mmdit_mechanism "
                               "'probabilities')."}),
                "clip": ("CLIP", {"tooltip": "Needed only with word_windows (to tokenise the words)."}),
                "attention_path": (list(PATHS), {
                    "default": "fast",
                    "tooltip": "fast: edits on the values through the fused attention kernel; reference: "
                               "materialises attention maps as the paper does (slow, for checking; "
                               "SD1.x, SD2.x, SDXL only)."}),
                "qk_end": _fraction(
                    QK_END_DEFAULT, f"{JOINT_MODELS}: fraction of steps in which every edited prompt's "
                                    "image queries and keys are the source's, in every block (Shin et al. use "
                                    "0.2; higher keeps more of the source's layout, 0 = no edit). "
                                    "mmdit_mechanism 'probabilities' and SD1.x, SD2.x, SDXL ignore it."),
                "mmdit_mechanism": (list(MMDIT_MECHANISMS), {
                    "default": QK_MECHANISM,
                    "tooltip": f"{JOINT_MODELS}: qk: the edited prompts get the source's image queries "
                               "and keys (edit 'replace' only, steps set by qk_end); probabilities: Prompt-to-Prompt "
                               "on the image→text attention probabilities of every joint attention "
                               "(replace, refine, reweight; steps set by cross_attention_start/end). "
                               "SD1.x, SD2.x, SDXL ignore it."}),
                "mmdit_blocks": ("STRING", {
                    "default": ALL_BLOCKS, "multiline": False,
                    "tooltip": f"{JOINT_MODELS}: the transformer blocks the edit runs in: 'all' "
                               "(as Shin et al.), or entries like 'double', 'single', 'double 0-9', 'single 5' separated by commas "
                               "(SD3's blocks are 'joint'). Word maps for local blend and P2P Attention Maps "
                               "come from the family's map blocks (Flux's double, SD3's joint) either way. SD1.x, SD2.x, SDXL ignore it."}),
            },
        }

    def apply(self, model, p2p_edit, edit: str, cross_attention_start: float, cross_attention_end: float,
              self_attention_end: float, self_attention_layers: str, word_windows: str = "", clip=None,
              attention_path: str = "fast", qk_end: float = QK_END_DEFAULT, mmdit_mechanism: str = QK_MECHANISM,
              mmdit_blocks: str = ALL_BLOCKS):
        cross_window = _window("cross_attention_start/end", cross_attention_start, cross_attention_end)
        family = family_of(model)
        family.check_prompts(p2p_edit.encoder)
        if family.is_joint:
            check_mmdit_request(p2p_edit, edit, word_windows, attention_path, mmdit_mechanism)
            blocks = select_blocks(mmdit_blocks, family.block_keys(model))
            if mmdit_mechanism == PROBABILITIES_MECHANISM:
                settings = ControlSettings(kind=edit, cross_window=cross_window, word_windows=_word_windows(word_windows, clip))
                return install_probabilities(model, align_plan(p2p_edit, settings), blocks)
            return install_qk(model, p2p_edit, QKSettings(_window("qk_end", 0.0, qk_end), blocks))
        settings = ControlSettings(
            kind=edit,
            cross_window=cross_window,
            word_windows=_word_windows(word_windows, clip),
            self_window=_window("self_attention_end", 0.0, self_attention_end),
            self_layers=self_attention_layers,
        )
        if not family.is_unet:  # Wan: the UNet controller on its cross-attention, through the attention override
            return install_wan(model, align_plan(p2p_edit, settings), attention_path)
        patched, controller = install(model, align_plan(p2p_edit, settings), attention_path)
        return patched, controller


def _word_windows(spec: str, clip) -> tuple:
    if not spec.strip():
        return ()
    if clip is None:
        raise P2PInputError("word_windows: connect the CLIP input so the words can be tokenised")
    return parse_word_windows(spec, lambda w: clip_words(clip, w))
