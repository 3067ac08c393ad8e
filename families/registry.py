"""Which model family a ComfyUI MODEL belongs to, and what the pack does on it.

One :class:`ModelFamily` row per family says everything the nodes and installers need to know
about it: which ``comfy.model_base`` classes it is, whether text meets the image in cross-attention
(UNet) or in a joint attention over ``[text, image]`` tokens (MMDiT), the transformer blocks the
joint edit hooks and how, which text encoders its prompts come from, and whether it runs real
classifier-free guidance. A family is recognised by its model's exact class (feature detection:
a host without the class never produces such a model), so a subclass with different blocks or
conditioning is refused until it has its own row. Nodes ask :func:`family_of`; nothing else checks
a model's class or name.

Adding a family: one module with its row (see ``families/joint/flux.py``), registered with
:func:`register` in ``families/__init__.py``. A cross-attention transformer (Wan) has its own
package (``families/wan/``: its row and its installer), as the UNets have ``families/unet/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import comfy.model_base
import comfy.supported_models

from ..attention.edit_spec import TEXT_ENCODERS
from ..attention.errors import P2PInputError

CROSS_ATTENTION, JOINT_ATTENTION = "cross", "joint"
DIT_BLOCKS, MODEL_WRAPPER, ATTENTION_OVERRIDE = "dit", "wrapper", "override"
"""How a joint family's edit reaches its attention: through ``patches_replace["dit"]`` around every
block (Flux, SD3, Qwen-Image …), or, for models that read no block patches (NextDiT), through a
``DIFFUSION_MODEL`` wrapper that puts the override into every call's options. ATTENTION_OVERRIDE:
a cross-attention transformer (Wan) whose self- and cross-attention calls the UNet controller edits
through the attention override (it has no UNet attn1/attn2 replace patches)."""


class UnsupportedModelError(P2PInputError):
    """The model is not one whose attention the pack can edit (or not on this ComfyUI)."""


def _always(model: Any) -> bool:
    return True


def _never(model: Any) -> bool:
    return False


@dataclass(frozen=True)
class ModelFamily:
    """One model family: what the pack needs to know to install each feature on its models."""

    id: str  # short id, as test ids and workflow names use it: "sd", "flux", "qwen_image"
    name: str  # as messages name it: "Flux.1", "Qwen-Image"
    model_classes: tuple[str, ...]  # comfy.model_base classes, matched exactly
    attention: str  # CROSS_ATTENTION (UNet) or JOINT_ATTENTION (MMDiT)
    text_encoders: tuple[str, ...]  # the encoder kinds (attention.edit_spec) whose prompts it takes
    blocks: tuple[tuple[str, str], ...] = ()  # joint: (diffusion_model attribute, dit patch kind), in call order
    route: str = DIT_BLOCKS  # joint: DIT_BLOCKS or MODEL_WRAPPER
    map_blocks: tuple[str, ...] = ("double_block",)  # joint: block kinds whose word maps are recorded
    real_cfg: Callable[[Any], bool] = field(default=_always)  # runs an unconditional pass at cfg > 1
    cfg_note: str = ""  # why it has no real CFG, for the refusal of the null-text methods
    added_in: str = ""  # the ComfyUI version that added its model class, for hosts without it
    recognises: Callable[[Any], bool] | None = None  # instead of the class match (the UNet row: by structure)
    image_first: Callable[[Any], bool] = field(default=_never)  # joint: its attention runs [image, text]
    updates_in_place: bool = False  # its blocks add to activations autograd saved, in place (Flux-style): gradients keep copies
    pads_text_left_to: int = 0  # joint: the model left-pads a shorter context with zeros to this many columns (Flux.2)
    config_classes: tuple[str, ...] = ()  # comfy.supported_models configs, matched exactly, where families
    # share a model class (Z-Image and Lumina 2 are both model_base.Lumina2): the model's model_config
    call_layout: Callable[[Any, tuple, dict], tuple[int, int, int]] | None = None  # MODEL_WRAPPER route:
    # (diffusion model, args, kwargs of its forward) -> (context columns, text tokens, joint tokens) of the
    # call's joint attention [text, image]; text tokens exceed the columns where the model pads its caption

    accepts: Callable[[Any], bool] = field(default=_always)  # after the class match: a variant it edits (Wan:
    # text- and image-to-video, not first-last-frame); a model it refuses falls to the refused families

    @property
    def is_joint(self) -> bool:
        return self.attention == JOINT_ATTENTION

    @property
    def is_unet(self) -> bool:
        """Whether its cross-attention is a UNet's, edited through attn1/attn2 replace patches."""
        return self.attention == CROSS_ATTENTION and self.route != ATTENTION_OVERRIDE

    def block_keys(self, model: Any) -> list[tuple[str, int]]:
        """Every transformer block of a joint model as its ``dit`` patch key, in call order."""
        diffusion_model = model.model.diffusion_model
        return [(kind, i) for attribute, kind in self.blocks
                for i in range(len(getattr(diffusion_model, attribute, ())))]

    def matches(self, model: Any) -> bool:
        if self.recognises is not None:
            return self.recognises(model)
        return (any(_class_is(model, name) for name in self.model_classes)
                and (not self.config_classes or any(_config_is(model, name) for name in self.config_classes))
                and self.accepts(model))

    def check_prompts(self, encoder: str) -> None:
        """Refuse prompts (``P2PEdit.encoder``) that another family's text encoder made: their
        columns are not this model's context."""
        if encoder not in self.text_encoders:
            kind = ("a UNet" if self.is_unet else "a joint-attention transformer" if self.is_joint
                    else "a cross-attention transformer")
            raise P2PInputError(
                f"p2p_edit: its prompts were encoded by {TEXT_ENCODERS.get(encoder, encoder)}, but this model is "
                f"{self.name}, {kind} that reads {' or '.join(TEXT_ENCODERS[e] for e in self.text_encoders)}; "
                "connect the model's own text encoder to 'P2P Prompts'")

    def available(self) -> bool:
        """Whether this ComfyUI has the family's model classes (and its configs, where it names them)."""
        return self.recognises is not None or not self.missing_classes()

    def missing_classes(self) -> tuple[str, ...]:
        """The family's classes this ComfyUI lacks: its model classes if it has none of them, its
        ``comfy.supported_models`` configs if it has none of those."""
        missing: tuple[str, ...] = ()
        for module, names in ((comfy.model_base, self.model_classes), (comfy.supported_models, self.config_classes)):
            if names and not any(getattr(module, n, None) is not None for n in names):
                missing += names
        return missing


@dataclass(frozen=True)
class RefusedFamily:
    """A family the pack recognises but does not edit, with the reason given to the user."""

    name: str
    model_classes: tuple[str, ...]
    reason: str
    variant: Callable[[Any], str] | None = None  # names the model's variant in the message (Wan: "VACE" …)


_FAMILIES: list[ModelFamily] = []
_REFUSED: list[RefusedFamily] = []


def register(family: ModelFamily | RefusedFamily) -> None:
    (_FAMILIES if isinstance(family, ModelFamily) else _REFUSED).append(family)


def families() -> tuple[ModelFamily, ...]:
    """Every supported family, in registration order."""
    return tuple(_FAMILIES)


def family_by_id(family_id: str) -> ModelFamily:
    """The family ``family_id``; refuses one this ComfyUI lacks, saying which version adds it."""
    for family in _FAMILIES:
        if family.id == family_id:
            if not family.available():
                raise UnsupportedModelError(
                    f"{family.name} models need ComfyUI {family.added_in} or newer; this ComfyUI has no "
                    f"{' / '.join(family.missing_classes())} model class. Update ComfyUI to use {family.name}")
            return family
    raise UnsupportedModelError(f"no model family {family_id!r}; the pack knows "
                                f"{', '.join(f.id for f in _FAMILIES)}")


def _class_is(model: Any, name: str) -> bool:
    cls = getattr(comfy.model_base, name, None)
    return cls is not None and type(model.model) is cls


def _config_is(model: Any, name: str) -> bool:
    cls = getattr(comfy.supported_models, name, None)
    return cls is not None and type(getattr(model.model, "model_config", None)) is cls


def family_of(model: Any) -> ModelFamily:
    """The family of a ComfyUI MODEL (a ``ModelPatcher``); refuses a model the pack does not edit
    with a message naming it and what to load instead."""
    for family in _FAMILIES:
        if family.matches(model):
            return family
    name = type(model.model).__name__
    for refused in _REFUSED:
        if any(_class_is(model, n) for n in refused.model_classes):
            what = f"{name}, {refused.variant(model)}" if refused.variant is not None else name
            raise UnsupportedModelError(f"this model is {refused.name} ({what}): {refused.reason}")
    supported = ", ".join(f.name for f in _FAMILIES if f.available())
    raise UnsupportedModelError(
        f"this model is {name}, which the pack cannot edit; it edits {supported}. Load one of those models")


def find_family(model: Any) -> ModelFamily | None:
    """:func:`family_of`, or None for a model the pack does not edit."""
    try:
        return family_of(model)
    except UnsupportedModelError:
        return None
