"""What a Prompt-to-Prompt edit asks for: the prompts and word edits (:class:`P2PEdit`, built by
the prompt, reweight and local-blend nodes) and the attention control's settings
(:class:`ControlSettings`). :mod:`.edit_plan` turns both into the tensors the controller applies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import P2PInputError
from .step_window import Window
from .tokens import PromptTokens

EDIT_KINDS = ("replace", "refine", "reweight")
SELF_ATTENTION_LAYERS = ("coarse", "all")
CLIP_ENCODER, T5_ENCODER = "clip", "t5"
QWEN_IMAGE_ENCODER, HUNYUAN_IMAGE_ENCODER = "qwen_image", "hunyuan_image"
FLUX2_ENCODER, Z_IMAGE_ENCODER, LUMINA2_ENCODER = "flux2", "z_image", "lumina2"
WAN_ENCODER = "wan"
TEXT_ENCODERS = {
    CLIP_ENCODER: "a CLIP without T5 (SD1.x, SD2.x, SDXL)",
    T5_ENCODER: "a text encoder with T5 (Flux.1, SD3, Chroma)",
    QWEN_IMAGE_ENCODER: "Qwen-Image's Qwen2.5-VL",
    HUNYUAN_IMAGE_ENCODER: "HunyuanImage 2.1's Qwen2.5-VL and ByT5",
    FLUX2_ENCODER: "Flux.2's text encoder (Mistral 3 or Qwen3)",
    Z_IMAGE_ENCODER: "Z-Image's Qwen3",
    LUMINA2_ENCODER: "Lumina 2's Gemma 2",
    WAN_ENCODER: "Wan's umT5",
}
"""How the prompts were encoded (``P2PEdit.encoder``), as a message names it. CLIP alone (SD1.x,
SD2.x, SDXL): the conditioning's columns are the prompts' CLIP tokens, which the word edits locate;
with a T5 (Flux: T5; SD3: CLIP-L‖G then T5), the words are the T5 words (SD3: and the CLIP words)
at their columns of the context. A model family names the encoders whose prompts it takes."""


@dataclass(frozen=True)
class Reweight:
    words: tuple[str, ...]  # one CLIP word sequence, e.g. ("teddy", "bear")
    weight: float


@dataclass(frozen=True)
class LocalBlend:
    source_words: tuple[tuple[str, ...], ...]
    target_words: tuple[tuple[str, ...], ...]
    threshold: float = 0.3
    start: float = 0.2  # fraction of steps before blending starts
    temporal_smoothing: float = 0.0  # a video mask's Gaussian reach along time, in frames (0 = none)


@dataclass(frozen=True)
class P2PEdit:
    """The prompts of one Prompt-to-Prompt batch (item 0 = source) and the edits asked for."""

    source: PromptTokens
    targets: tuple[PromptTokens, ...]
    reweights: tuple[Reweight, ...] = ()
    local_blend: LocalBlend | None = None
    encoder: str = CLIP_ENCODER

    @property
    def batch_size(self) -> int:
        return 1 + len(self.targets)

    @property
    def num_columns(self) -> int:
        return self.source.num_columns

    def with_reweight(self, reweight: Reweight) -> "P2PEdit":
        if not any(t.find(reweight.words) for t in self.targets):
            raise P2PInputError(
                f"reweight word {' '.join(reweight.words)!r} is not in any edited prompt "
                f"({'; '.join(repr(t.text) for t in self.targets)}); pick a word of an edited prompt"
            )
        return replace(self, reweights=self.reweights + (reweight,))

    def with_local_blend(self, blend: LocalBlend) -> "P2PEdit":
        for words in blend.source_words:
            if not self.source.find(words):
                raise P2PInputError(
                    f"local blend source word {' '.join(words)!r} is not in the source prompt "
                    f"{self.source.text!r}"
                )
        for i, target in enumerate(self.targets, 1):
            if blend.target_words and not any(target.find(w) for w in blend.target_words):
                raise P2PInputError(
                    f"none of the local blend target words {[' '.join(w) for w in blend.target_words]} "
                    f"is in edited prompt {i} ({target.text!r}); list a word of each edited prompt"
                )
        return replace(self, local_blend=blend)


@dataclass(frozen=True)
class ControlSettings:
    """The attention-control node's settings; a wrong value is refused here, named as the node's input."""

    kind: str = "replace"
    cross_window: Window = Window(0.0, 0.8)
    word_windows: tuple[tuple[tuple[str, ...], Window], ...] = ()
    self_window: Window = Window(0.0, 0.4)
    self_layers: str = "coarse"

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise P2PInputError(f"edit kind {self.kind!r} is not one of {EDIT_KINDS}")
        if self.self_layers not in SELF_ATTENTION_LAYERS:
            raise P2PInputError(f"self_attention_layers {self.self_layers!r} is not one of {SELF_ATTENTION_LAYERS}")
