"""The MODEL_WRAPPER route of the joint-attention edit: models that read no ``dit`` block patches
(NextDiT: Z-Image, Lumina 2) get the edit through a ``DIFFUSION_MODEL`` wrapper.

Per model call the wrapper asks the family for the call's layout (``ModelFamily.call_layout``:
context columns, text tokens, joint tokens) and runs the model with a copy of the call's
``transformer_options`` that carries the edit's override (:meth:`QKEdit.block_options`, layered
on any override already there). The override sees every attention call of the forward: the
refiners' (text only, image only) are left alone because their length is not the joint length;
the joint layers' are edited where ``mmdit_blocks`` chose them (:class:`LayerGate`) and give word
maps in every layer, image tokens only (the recorder reads the first rows·columns image tokens,
before Z-Image's image pad tail).
"""

from __future__ import annotations

from typing import Any, Callable

import comfy.patcher_extension

from ...attention.attention_call import AttentionCall, run_call
from ...attention.mmdit_edit import QKEdit
from ...attention.mmdit_maps import PromptColumns
from ...attention.sampled_batch import check_sampled_batch
from ...patching.comfy_model import PatchConflictError, set_outer_sample, set_post_cfg_blend
from ...patching.compose import ContainerPassingOverride, takes_containers
from ..registry import ModelFamily

DIFFUSION_MODEL = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL


class LayerGate:
    """The override of one model call where the edit runs in some joint layers only: the joint
    attention calls (``joint_length`` tokens) of ``layers`` run ``edited``, every other call
    ``plain`` (None: the host's attention). A call's layer is the host's ``block_index`` where it
    sets one (0.33.0), else the count of joint calls so far (the layers run in order)."""

    def __init__(self, layers: frozenset[int], joint_length: int, edited: Callable, plain: Callable | None):
        self.layers, self.joint_length, self.edited, self.plain = layers, joint_length, edited, plain
        self.calls = 0

    def __call__(self, func: Callable, *args: Any, **kwargs: Any) -> Any:
        target = self.plain
        call = AttentionCall.read(args, kwargs)
        if call is not None and call.length == self.joint_length:
            index = call.options.get("block_index", self.calls)
            self.calls += 1
            if index in self.layers:
                target = self.edited
        return run_call(func, args, kwargs, target)


class EditWrapper:
    """``DIFFUSION_MODEL`` wrapper: runs each model call with the edit's override in its options."""

    def __init__(self, edit: QKEdit, family: ModelFamily, layers: frozenset[int] | None):
        self.edit, self.family, self.layers = edit, family, layers

    def __deepcopy__(self, memo: dict) -> "EditWrapper":
        return self  # older hosts' clone() deep-copies the wrappers; the edit's state must stay shared

    def __call__(self, executor, *args: Any, **kwargs: Any) -> Any:
        opts = kwargs.get("transformer_options")
        if opts is None or len(args) < 3:
            return executor(*args, **kwargs)
        columns, text, joint = self.family.call_layout(executor.class_obj, args, kwargs)
        edited = self.options(opts, columns, text, joint)
        if edited is None:
            return executor(*args, **kwargs)
        return executor(*args, **{**kwargs, "transformer_options": edited})

    def options(self, opts: dict, columns: int, text: int, joint: int) -> dict | None:
        """A copy of ``opts`` with the edit's overrides for one call, or None where it neither edits nor records."""
        previous = opts.get("optimized_attention_override")
        passes_containers = takes_containers(previous)
        if passes_containers:  # the pack's overrides end at the host function; the wrapper hands on to theirs
            opts = {key: value for key, value in opts.items() if key != "optimized_attention_override"}
        plain = opts.get("optimized_attention_override")
        layout = PromptColumns(count=columns)
        inner = self.edit.block_options(opts, text, joint, edits=True, records=False, layout=layout)
        override = inner["optimized_attention_override"] if inner is not None else plain
        if self.layers is not None and override is not plain:
            override = LayerGate(self.layers, joint, override, plain)
        gated = {**opts, "optimized_attention_override": override}
        outer = self.edit.block_options(gated, text, joint, edits=False, records=True, layout=layout)
        edited = outer if outer is not None else gated
        override = edited["optimized_attention_override"]
        if override is plain:
            return None
        if passes_containers:
            edited["optimized_attention_override"] = ContainerPassingOverride(override, previous)
        return edited


def wrapper_intact(model_options: dict, wrapper: EditWrapper, key: str) -> bool:
    wrappers = model_options.get("transformer_options", {}).get("wrappers", {}).get(DIFFUSION_MODEL, {})
    return any(w is wrapper for w in wrappers.get(key, ()))


def install_wrapped_edit(model, edit: QKEdit, family: ModelFamily, key: str, node: str,
                         image_grid: Callable[[Any, Any], tuple[int, int]]):
    """Return ``(patched clone, edit)`` with ``edit`` in every call of ``model``'s diffusion model;
    refuses a model that already went through ``node`` (``key``: the wrapper's key)."""
    if model.get_wrappers(DIFFUSION_MODEL, key):
        raise PatchConflictError(
            f"this MODEL already went through {node}; apply it once, to the model that comes before "
            f"the first {node} node (each edit needs its own {node} on the unedited model)")
    blocks = edit.settings.blocks
    layers = None if blocks is None else frozenset(index for _, index in blocks)
    wrapper = EditWrapper(edit, family, layers)
    patched = model.clone()
    patched.add_wrapper_with_key(DIFFUSION_MODEL, key, wrapper)
    p2p_edit = edit.edit
    if p2p_edit.local_blend is not None:
        set_post_cfg_blend(patched, edit.blend)

    def outer_sample(executor, noise, latent_image, *args, **kwargs):
        guider = executor.class_obj
        check_sampled_batch(p2p_edit, guider, latent_image)
        if not wrapper_intact(guider.model_options, wrapper, key):
            raise PatchConflictError(
                f"{node}: a node applied after it removed its model wrapper, which drops the edit. Apply that "
                f"node before {node} (between the model loader and it)")
        edit.reset(image_grid(model, latent_image))
        return executor(noise, latent_image, *args, **kwargs)

    set_outer_sample(patched, key, outer_sample)
    return patched, edit
