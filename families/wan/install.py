"""Where the Prompt-to-Prompt controller (:mod:`...attention.unet_controller`, the UNets' own) meets
Wan's attention. Host code.

Wan has no attn1/attn2 replace patches, so a ``DIFFUSION_MODEL`` wrapper runs each model call with
a copy of its ``transformer_options`` that carries the edit's attention override
(:class:`WanAttentionCalls`). Every block calls the attention in this order (both hosts, flattened
``(B, L, H·D)``): ``WanSelfAttention.forward`` over the video tokens, then the cross-attention:
text-to-video's ``WanT2VCrossAttention`` makes one call, video→text, whose keys are the context's
columns; image-to-video's ``WanI2VCrossAttention`` (Wan 2.1 I2V: ``k_img``/``v_img`` projections)
makes two with one query, first video→image over the CLIP-vision tokens that the model put before
the text (``clip_fea``'s 257 a picture; without ``clip_fea`` the host slices ``[:None]`` and the
image call's keys are the whole context), then video→text, and adds the two outputs. The override
counts the calls (0.3.64 passes no ``block_index``) and checks each by its key length (video
tokens, image tokens, text columns), so a host that changes the order fails loudly instead of
editing the wrong call. The controller then edits the self- and text calls exactly as a UNet's
attn1 / attn2 layers: all blocks sit at one level, so every block's maps are recorded and
self-attention is injected in every block (through the fused kernel, the value trick: no
video×video map is ever formed). The image call runs as the host's own attention, untouched: its
columns are the input picture, never a word (no edit, no map).

Wan 2.2 A14B's I2V experts have no CLIP-vision embedding: their image arrives as 20 channels
concatenated to the latent before the patch embedding, so their blocks call the attention as
text-to-video does (a ``clip_fea`` given to such a model is ignored by the host, and here too).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import comfy.patcher_extension
import torch

from ...attention.edit_plan import EditPlan
from ...attention.errors import P2PInputError
from ...attention.mmdit_maps import recorded_columns
from ...attention.sampled_batch import check_sampled_batch
from ...attention.unet_controller import LayerLayout, P2PController
from ...base.errors import PromptEditError
from ...patching.comfy_model import PatchConflictError, set_outer_sample, set_post_cfg_blend
from ..registry import ATTENTION_OVERRIDE, UnsupportedModelError, family_of

DIFFUSION_MODEL = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
WRAPPER_KEY = "prompt_edit_p2p_wan"
NODE = "P2P Attention Control"
PLACE = "output"  # the map store's place of every Wan block (the maps node's 'all' and 'up' show them)
HOST_ATTENTION = "prompt_edit_host_attention"  # the call's own attention, in the options the controller gets
UNSUPPORTED_INPUTS = {
    "time_dim_concat": "frames concatenated along time",
    "reference_latent": "a reference latent (its tokens precede the video's)",
    "context_latents": "in-context reference latents (their tokens follow the video's)",
}


def wan_layout(model: Any) -> LayerLayout:
    """Every Wan block as a controller layer key ``(PLACE, block, 0)``, all at one level."""
    return LayerLayout({(PLACE, i, 0): 0 for i in range(len(model.model.diffusion_model.blocks))})


def token_grid(diffusion_model: Any, x: torch.Tensor) -> tuple[int, int, int]:
    """The video tokens' (frames, rows, columns) for a latent ``[B, C, F, H, W]`` (the patch
    embedding's grid; the host pads the latent up to whole patches)."""
    patch = tuple(getattr(diffusion_model, "patch_size", (1, 2, 2)))
    return tuple(math.ceil(int(n) / int(p)) for n, p in zip(x.shape[-3:], patch))


SELF, IMAGE, TEXT = "self", "image", "text"


class WanAttentionCalls:
    """The attention override of one Wan model call: counts the calls and hands each to the controller.

    ``image_columns``: the keys of each block's image call (image-to-video's cross-attention), or
    None where the blocks have none (text-to-video)."""

    def __init__(self, controller: P2PController, previous: Callable | None, columns: int, grid: tuple[int, int, int],
                 image_columns: int | None = None):
        self.controller, self.previous, self.columns, self.grid = controller, previous, columns, grid
        self.tokens = grid[0] * grid[1] * grid[2]
        self.order = (SELF, TEXT) if image_columns is None else (SELF, IMAGE, TEXT)
        self.keys = {SELF: self.tokens, IMAGE: image_columns, TEXT: columns}
        self.calls = 0

    def __call__(self, func: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        def host(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *_: Any) -> torch.Tensor:
            if self.previous is not None:  # another node's override (e.g. a different kernel) keeps running
                return self.previous(func, a, b, c, heads, *args, **kwargs)
            return func(a, b, c, heads, *args, **kwargs)

        index, self.calls = self.calls, self.calls + 1
        block, position = divmod(index, len(self.order))
        kind = self.order[position]
        if kwargs.get("skip_reshape", False) or q.ndim != 3:
            raise PromptEditError(f"{NODE}: Wan's attention call {index} is not flattened (B, L, H·D) as the pack "
                                  "expects; this ComfyUI's Wan is not supported yet")
        if q.shape[1] != self.tokens or k.shape[1] != self.keys[kind]:
            raise PromptEditError(
                f"{NODE}: Wan's attention call {index} has {q.shape[1]} queries and {k.shape[1]} keys, not the "
                f"{self.tokens} video tokens and {self.keys[kind]} keys of block {block}'s {kind} attention "
                f"(calls per block: {', '.join(self.order)}); this ComfyUI's Wan calls its attention in another order")
        if kind == IMAGE:  # the input picture's CLIP-vision tokens: the host's own attention, never edited
            return host(q, k, v)
        opts = {**(kwargs.get("transformer_options") or {}), "block": (PLACE, block), "block_index": 0,
                "n_heads": heads, "token_grid": self.grid, HOST_ATTENTION: host}
        edit = self.controller.edited_cross_attention if kind == TEXT else self.controller.edited_self_attention
        out = edit(q, k, v, opts)
        return host(q, k, v) if out is None else out


def image_columns(diffusion_model: Any, context: torch.Tensor, clip_fea: torch.Tensor | None) -> int | None:
    """The keys of each block's image call: None on blocks without one (text-to-video, Wan 2.2 A14B
    I2V), else ``clip_fea``'s tokens, or the whole context where no ``clip_fea`` came (the host
    then slices the context ``[:None]`` for the image keys)."""
    blocks = getattr(diffusion_model, "blocks", ())
    if not len(blocks) or not hasattr(blocks[0].cross_attn, "k_img"):
        return None
    return int(clip_fea.shape[-2]) if clip_fea is not None else int(context.shape[1])


class WanEditWrapper:
    """``DIFFUSION_MODEL`` wrapper: runs each Wan call with :class:`WanAttentionCalls` in its options."""

    def __init__(self, controller: P2PController):
        self.controller = controller

    def __deepcopy__(self, memo: dict) -> "WanEditWrapper":
        return self  # 0.3.64's clone() deep-copies the wrappers; the controller's state must stay shared

    def __call__(self, executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None,
                 **kwargs: Any):
        given = {"clip_fea": clip_fea, "time_dim_concat": time_dim_concat, **kwargs}
        unsupported = [UNSUPPORTED_INPUTS[k] for k in UNSUPPORTED_INPUTS if given.get(k) is not None]
        if unsupported:
            raise UnsupportedModelError(f"{NODE}: this Wan call has {'; '.join(unsupported)}, which the Wan edit does "
                                        "not support yet (text- and image-to-video only); sample without it")
        opts = dict(transformer_options or {})
        diffusion_model = executor.class_obj
        calls = WanAttentionCalls(self.controller, opts.get("optimized_attention_override"), int(context.shape[1]),
                                  token_grid(diffusion_model, x), image_columns(diffusion_model, context, clip_fea))
        opts["optimized_attention_override"] = calls
        return executor(x, timestep, context, clip_fea, time_dim_concat, opts, **kwargs)


def _host_attention(q, k, v, heads: int, opts: dict) -> torch.Tensor:
    return opts[HOST_ATTENTION](q, k, v)


def wrapper_intact(model_options: dict, wrapper: WanEditWrapper) -> bool:
    wrappers = model_options.get("transformer_options", {}).get("wrappers", {}).get(DIFFUSION_MODEL, {})
    return any(w is wrapper for w in wrappers.get(WRAPPER_KEY, ()))


def install(model, plan: EditPlan, path: str = "fast") -> tuple[Any, P2PController]:
    """Return ``(patched clone, controller)`` for a Wan text- or image-to-video model; the input model is
    never modified, another node's attention override on it keeps running under the edit."""
    family = family_of(model)
    if family.route != ATTENTION_OVERRIDE:
        raise UnsupportedModelError(f"{family.name} is not a Wan model")
    if path != "fast":
        raise P2PInputError("attention_path: 'reference' materialises every attention map (on Wan, video × video); "
                            "use 'fast' on Wan")
    if model.get_wrappers(DIFFUSION_MODEL, WRAPPER_KEY):
        raise PatchConflictError(f"this MODEL already went through {NODE}; apply it once, to the unedited model")
    # only the prompts' words and end tokens get a map: every column's would be video tokens × 512
    # per block call and per stored step (bench/wan_overhead.py measures both)
    controller = P2PController(plan, wan_layout(model), _host_attention, path, map_columns=recorded_columns(plan.edit))
    wrapper = WanEditWrapper(controller)
    patched = model.clone()
    patched.add_wrapper_with_key(DIFFUSION_MODEL, WRAPPER_KEY, wrapper)
    if plan.edit.local_blend is not None:
        set_post_cfg_blend(patched, controller.blend)

    def outer_sample(executor, noise, latent_image, *args, **kwargs):
        guider = executor.class_obj
        check_sampled_batch(plan.edit, guider, latent_image)
        if not wrapper_intact(guider.model_options, wrapper):
            raise PatchConflictError(f"{NODE}: a node applied after it removed its model wrapper, which drops the "
                                     f"edit. Apply that node before {NODE}")
        controller.reset()
        return executor(noise, latent_image, *args, **kwargs)

    set_outer_sample(patched, WRAPPER_KEY, outer_sample)
    return patched, controller
