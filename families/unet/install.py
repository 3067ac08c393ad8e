"""Where the Prompt-to-Prompt UNet controller meets ComfyUI's ``ModelPatcher`` (SD1.x, SD2.x, SDXL).

Installs a :class:`~...attention.unet_controller.P2PController` on a clone of the model: an attn2 replace patch on
every cross-attention layer, an attn1 replace patch where self-attention is injected (both
composed with the replace patches other nodes installed), a post-CFG function for local blend,
and an ``OUTER_SAMPLE`` wrapper that checks the batch and the patches before sampling and resets
per-run state (ComfyUI re-uses the same patched model for every queued run).
"""

from __future__ import annotations

from comfy.ldm.modules.attention import SpatialTransformer, optimized_attention
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, Upsample

from ...attention.edit_plan import EditPlan
from ...attention.errors import P2PInputError
from ...attention.sampled_batch import check_sampled_batch
from ...attention.unet_controller import LayerKey, LayerLayout, P2PController
from ...patching.comfy_model import check_attention_intact, install_attention, set_outer_sample, set_post_cfg_blend
from ..registry import UnsupportedModelError, family_of

WRAPPER_KEY = "prompt_edit_p2p"
FAMILY = "P2P Attention Control"


def unet_layer_layout(model) -> LayerLayout:
    """Every cross-attention layer key ``(block, index, depth)`` with its resolution level.

    Raises :class:`~..registry.UnsupportedModelError` for a model of another family (the joint
    transformers go through :mod:`..joint.install` instead).
    """
    unet = model.model.diffusion_model
    name = type(model.model).__name__
    family = family_of(model)
    if family.is_joint:
        raise UnsupportedModelError(f"{family.name} is a transformer without UNet attention layers; "
                                    "the UNet edit does not apply to it")
    levels: dict[LayerKey, int] = {}

    def visit(block, name: str, index: int, level: int) -> None:
        for module in block:
            if isinstance(module, SpatialTransformer):
                for depth, tb in enumerate(module.transformer_blocks):
                    if getattr(tb, "attn2", None) is not None:
                        levels[(name, index, depth)] = level

    level = 0
    for i, block in enumerate(unet.input_blocks):
        visit(block, "input", i, level)
        level += any(isinstance(m, Downsample) for m in block)
    visit(unet.middle_block, "middle", 0, level)
    for i, block in enumerate(unet.output_blocks):
        visit(block, "output", i, level)
        level -= any(isinstance(m, Upsample) for m in block)
    if not levels:
        raise UnsupportedModelError(
            f"this {name} UNet has no cross-attention layers, so there are no text-token attention "
            "maps to edit; use an SD1.x, SD2.x or SDXL checkpoint."
        )
    return LayerLayout(levels)


def host_attention(q, k, v, heads: int, opts: dict, **host_keywords):
    """ComfyUI's fused attention, exactly as its own CrossAttention calls it (with any keyword a
    newer host added to the replace patch's call)."""
    return optimized_attention(q, k, v, heads, attn_precision=opts.get("attn_precision"), transformer_options=opts,
                               **host_keywords)


def _check_batch(controller: P2PController, guider, latent_image) -> None:
    edit = controller.plan.edit
    positives = check_sampled_batch(edit, guider, latent_image)
    for c in positives:
        width = c["cross_attn"].shape[1]
        if c["cross_attn"].shape[0] == edit.batch_size and width % edit.num_columns:
            raise P2PInputError(
                f"the positive CONDITIONING has {width} token columns but the P2P prompts were "
                f"tokenised to {edit.num_columns}; the edit lies past the conditioning's last chunk. "
                "Use the CONDITIONING of the same 'P2P Prompts' node"
            )


def install(model, plan: EditPlan, path: str = "fast"):
    """Return ``(patched clone, controller)``; the input model is never modified. Attention
    patches other nodes put on the model are wrapped, not dropped (patching.compose)."""
    layout = unet_layer_layout(model)
    controller = P2PController(plan, layout, host_attention, path)
    patched = model.clone()
    patched_layers = {"attn2": list(layout.levels)}
    if plan.settings.self_window.end > plan.settings.self_window.start:
        patched_layers["attn1"] = list(controller.self_keys)
    edited = {"attn2": controller.edited_cross_attention, "attn1": controller.edited_self_attention}
    for kind, keys in patched_layers.items():
        install_attention(patched, kind, keys, FAMILY, controller, edited[kind], host_attention)
    if plan.edit.local_blend is not None:
        set_post_cfg_blend(patched, controller.blend)

    def outer_sample(executor, noise, latent_image, *args, **kwargs):
        guider = executor.class_obj
        _check_batch(controller, guider, latent_image)
        for kind, keys in patched_layers.items():
            check_attention_intact(guider.model_options, kind, keys, FAMILY, controller)
        controller.reset()
        return executor(noise, latent_image, *args, **kwargs)

    set_outer_sample(patched, WRAPPER_KEY, outer_sample)
    return patched, controller
