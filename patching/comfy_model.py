"""Installing the pack's patches on a ComfyUI ``ModelPatcher`` beside what other nodes put there.

Attention replace patches are installed with :class:`~.compose.ComposedAttention`, wrapping the
patch each layer had. ComfyUI looks a layer's replace patch up by ``(block, index, depth)`` and
then by ``(block, index)``; the pack installs on the shorter key wherever the layer has no
depth-specific patch, so that a node that replaces a whole block at sampling time (Perturbed-
Attention Guidance's perturbed pass) still takes precedence there, as it does without the pack.
Everything else already on the model (attention patches, post-CFG functions, wrappers, model
function wrappers) is kept by ``clone()`` and runs in its order.
"""

from __future__ import annotations

from typing import Callable, Iterable

import comfy.patcher_extension

from ..base.errors import PromptEditError
from .compose import BlockArguments, ComposedAttention, ComposedBlock, EditedAttention, PlainAttention, describe_patch

LayerKey = tuple[str, int, int]


class PatchConflictError(PromptEditError):
    """Another patch on the model makes one of the pack's patches impossible to honour."""


def replace_patches(model_options: dict, kind: str) -> dict:
    """The ``attn1``/``attn2`` replace patches in ``model_options``, by layer key (read-only)."""
    return model_options.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})


def effective_patch(patches: dict, key: LayerKey):
    """The replace patch ComfyUI calls for the layer ``key``, or None."""
    return patches.get(key, patches.get(key[:2]))


def install_attention(patched, kind: str, keys: Iterable[LayerKey], family: str, owner: object,
                      edited: EditedAttention, plain: PlainAttention) -> None:
    """Install ``edited`` on every layer of ``keys`` of ``patched`` (a clone), composed with the
    patch each layer had. Refuses a second patch of the same ``family`` on the same layers."""
    keys = list(keys)
    patches = replace_patches(patched.model_options, kind)
    for key in keys:
        existing = effective_patch(patches, key)
        if isinstance(existing, ComposedAttention) and existing.family == family:
            raise PatchConflictError(
                f"this MODEL already went through {family}; apply it once, to the model that comes before "
                f"the first {family} node (each edit needs its own {family} on the unedited model)")
    setter = patched.set_model_attn1_replace if kind == "attn1" else patched.set_model_attn2_replace
    blocks: dict[tuple[str, int], list[LayerKey]] = {}
    for key in keys:
        blocks.setdefault(key[:2], []).append(key)
    for block, layers in blocks.items():
        for key in layers:
            if key in patches:
                setter(ComposedAttention(family, owner, edited, plain, patches[key]), *key)
        if any(key not in patches for key in layers):
            setter(ComposedAttention(family, owner, edited, plain, patches.get(block)), *block)


def check_attention_intact(model_options: dict, kind: str, keys: Iterable[LayerKey], family: str, owner: object) -> None:
    """Before sampling: refuse when a node applied after the pack replaced one of its patches
    (the edit would silently not happen on that layer)."""
    patches = replace_patches(model_options, kind)
    for key in keys:
        patch = effective_patch(patches, key)
        if not (isinstance(patch, ComposedAttention) and patch.owner is owner):
            raise PatchConflictError(
                f"{family}: a node applied after it replaced the {kind} attention of layer {key} with "
                f"{describe_patch(patch)}, which drops the edit there. Apply that node before {family} "
                "(between the checkpoint and it), so that the edit can wrap it")


def install_blocks(patched, blocks: Iterable[tuple[str, int]], family: str, owner: object,
                   arguments: BlockArguments) -> None:
    """Install a :class:`ComposedBlock` on every transformer block ``(kind, index)`` of ``patched``
    (a clone of a joint-attention model), wrapping the ``dit`` patch each block had. Refuses a second
    patch of the same ``family`` on the same blocks."""
    blocks = list(blocks)
    patches = replace_patches(patched.model_options, "dit")
    for key in blocks:
        existing = patches.get(key)
        if isinstance(existing, ComposedBlock) and existing.family == family:
            raise PatchConflictError(
                f"this MODEL already went through {family}; apply it once, to the model that comes before "
                f"the first {family} node (each edit needs its own {family} on the unedited model)")
    for kind, index in blocks:
        patched.set_model_patch_replace(ComposedBlock(family, owner, kind, index, arguments, patches.get((kind, index))),
                                        "dit", kind, index)


def check_blocks_intact(model_options: dict, blocks: Iterable[tuple[str, int]], family: str, owner: object) -> None:
    """Before sampling: refuse when a node applied after the pack replaced one of its block patches."""
    patches = replace_patches(model_options, "dit")
    for key in blocks:
        patch = patches.get(key)
        if not (isinstance(patch, ComposedBlock) and patch.owner is owner):
            raise PatchConflictError(
                f"{family}: a node applied after it replaced the transformer block {key} with "
                f"{describe_patch(patch)}, which drops the edit there. Apply that node before {family} "
                "(between the model loader and it), so that the edit can wrap it")


def set_post_cfg_blend(patched, blend: Callable) -> None:
    """Install ``blend(x, denoised, sigma, schedule)`` (local blend) as a post-CFG function: it gets
    the step's input latent, the guided denoised batch, σ and the sampler's σ list, and returns the
    denoised batch the sampler steps with."""
    def post_cfg(args: dict):
        schedule = args["model_options"].get("transformer_options", {}).get("sample_sigmas")
        return blend(args["input"], args["denoised"], args["sigma"], schedule)

    patched.set_model_sampler_post_cfg_function(post_cfg)


def set_outer_sample(patched, key: str, wrapper: Callable) -> None:
    """Install ``wrapper`` as the ``OUTER_SAMPLE`` wrapper named ``key`` (replacing the one of the
    same name, keeping everyone else's). It runs once per sampling run, before the first step:
    where the pack checks its inputs and resets per-run state."""
    comfy_wrappers = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    patched.remove_wrappers_with_key(comfy_wrappers, key)
    patched.add_wrapper_with_key(comfy_wrappers, key, wrapper)
