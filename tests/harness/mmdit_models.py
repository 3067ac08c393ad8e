"""Tiny random-weight MMDiT models (Flux, SD3) built through ComfyUI's own classes.

The configs are what ``comfy.model_detection`` produces for a Flux / SD3 state dict, at widths a
CPU samples in milliseconds (a 4-step euler on a 16x16 latent: ~0.03 s). ``context_in_dim`` and
``vec_in_dim`` are config values, so the context is [B, T, MMDIT_CONTEXT_DIM], not T5's 4096.
Both models sample with flow matching (ComfyUI's CONST: x = (1-σ)·x0 + σ·ε, denoised = x - σ·v).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from harness.comfyui import ensure_comfyui
from harness.tiny_models import fill_random_

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher

MMDIT_CONTEXT_DIM = 32
MMDIT_POOLED_DIM = 16
MMDIT_LATENT_CHANNELS = 16


def flux_unet_config(hidden: int = 64, heads: int = 2, depth: int = 1, single: int = 2,
                     guidance_embed: bool = True, axes_dim: tuple[int, ...] = (8, 12, 12),
                     context_dim: int = MMDIT_CONTEXT_DIM) -> dict[str, Any]:
    """A Flux-dev layout (guidance embedding; without it, schnell's) with ``depth`` double and
    ``single`` single blocks. ``axes_dim``: the RoPE axes, which sum to hidden / heads, each even
    (FLUX.1's own are 16, 56, 56, which ComfyUI's model detection assumes for a file)."""
    import comfy.ldm.flux.model

    config = dict(image_model="flux", in_channels=MMDIT_LATENT_CHANNELS, out_channels=MMDIT_LATENT_CHANNELS,
                  patch_size=2, vec_in_dim=MMDIT_POOLED_DIM, context_in_dim=context_dim,
                  hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single,
                  axes_dim=list(axes_dim), theta=10000, qkv_bias=True, guidance_embed=guidance_embed)
    # 0.33.0's FluxParams requires txt_ids_dims; 0.3.64's has no such field and refuses it
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        config["txt_ids_dims"] = []
    return config


def sd3_unet_config(depth: int = 2, x_block_self_attn_layers: tuple[int, ...] = (),
                    context_dim: int = MMDIT_CONTEXT_DIM, pooled_dim: int = MMDIT_POOLED_DIM) -> dict[str, Any]:
    """An SD3 layout: hidden size 64·depth and depth heads, as mmdit.py derives them. The blocks of
    ``x_block_self_attn_layers`` get SD3.5's second, image-only attention (MMDiT-X)."""
    return dict(in_channels=MMDIT_LATENT_CHANNELS, out_channels=MMDIT_LATENT_CHANNELS, patch_size=2, depth=depth,
                input_size=None, adm_in_channels=pooled_dim, pos_embed_scaling_factor=None,
                context_embedder_config={"target": "torch.nn.Linear",
                                         "params": {"in_features": context_dim, "out_features": 64 * depth}},
                num_patches=64 * 64, pos_embed_max_size=64, qk_norm="rms",
                x_block_self_attn_layers=list(x_block_self_attn_layers))


def _patcher(model_config: Any, seed: int) -> comfy.model_patcher.ModelPatcher:
    import comfy.model_management as mm
    import comfy.model_patcher

    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    fill_random_(model.diffusion_model, seed)
    _fill_position_embedding_(model.diffusion_model)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def _fill_position_embedding_(diffusion_model: torch.nn.Module) -> None:
    """SD3's fixed sin-cos position table is a torch.empty buffer that checkpoints carry (fill_random_
    writes parameters only): left as it is, it holds whatever the memory held, NaN at times."""
    table = getattr(diffusion_model, "pos_embed", None)
    if isinstance(table, torch.Tensor):
        import comfy.ldm.modules.diffusionmodules.mmdit as mmdit

        side = int(table.shape[1] ** 0.5)
        values = mmdit.get_2d_sincos_pos_embed(table.shape[2], side)
        with torch.no_grad():
            table.copy_(torch.as_tensor(values, dtype=table.dtype).reshape(table.shape))


def tiny_flux_model(seed: int = 0, schnell: bool = False, **layout: Any) -> comfy.model_patcher.ModelPatcher:
    """Flux-dev-shaped ModelPatcher (one double, two single blocks by default; 339 k parameters);
    ``schnell``: without the guidance embedding, with FLUX.1-schnell's sampling; ``layout``: the
    other arguments of flux_unet_config."""
    ensure_comfyui()
    import comfy.supported_models

    if schnell:
        return _patcher(comfy.supported_models.FluxSchnell(flux_unet_config(guidance_embed=False, **layout)), seed)
    return _patcher(comfy.supported_models.Flux(flux_unet_config(**layout)), seed)


def tiny_sd3_model(seed: int = 0, depth: int = 2, **config: Any) -> comfy.model_patcher.ModelPatcher:
    """SD3-shaped ModelPatcher (two joint blocks by default; 1.1 M parameters); ``config``: the
    other arguments of sd3_unet_config (SD3.5's image-only attention, the context and pooled widths)."""
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.SD3(sd3_unet_config(depth, **config)), seed)


def random_conditioning(batch: int = 1, tokens: int = 8, seed: int = 1, guidance: float | None = None) -> list:
    """A CONDITIONING for either model: context [batch, tokens, 32] and a pooled vector (0.3.64's
    Flux requires one), optionally Flux's guidance."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, MMDIT_CONTEXT_DIM, generator=generator)
    extra: dict[str, Any] = {"pooled_output": torch.randn(batch, MMDIT_POOLED_DIM, generator=generator)}
    if guidance is not None:
        extra["guidance"] = guidance
    return [[context, extra]]


TINY_CLIP_L_DIM = MMDIT_POOLED_DIM  # Flux's pooled vector is CLIP-L's unprojected pooled output
TINY_CLIP_G_DIM = 16
SD3_CONTEXT_DIM = 4096  # SD3's text encoder pads CLIP-L||G to T5-XXL's width, so its T5 must be that wide
SD3_TINY_POOLED_DIM = TINY_CLIP_L_DIM + TINY_CLIP_G_DIM  # cat(CLIP-L pooled, CLIP-G projected pooled)


def _clip_config(hidden_size: int, **extra: int) -> dict[str, int]:
    return {"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_attention_heads": 4,
            "num_hidden_layers": 3, **extra}  # SD3 reads layer -2, which must be a middle layer


def _t5_config(width: int) -> dict[str, int]:
    return {"d_model": width, "d_ff": 64, "num_layers": 2, "num_heads": 2, "d_kv": 16}


def _tiny_clip(tokenizer: type, clip_model: type, model_options: dict[str, Any], seed: int) -> Any:
    import comfy.sd
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(tokenizer, clip_model)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32, **model_options})  # exact fp32
    fill_random_(clip.cond_stage_model, seed)
    return clip


def tiny_flux_clip(seed: int = 0, t5_width: int = MMDIT_CONTEXT_DIM) -> Any:
    """comfy.sd.CLIP with Flux's real tokenizers (CLIP-L, and T5-XXL's files shipped in ComfyUI) and
    tiny encoders: a 16-wide CLIP-L (the pooled vector) and a 2-layer, 32-wide T5 (the context), so
    its CONDITIONING fits tiny_flux_model: [1, ≥256, 32] (T5 pads to 256 tokens), pooled [1, 16].
    ``t5_width``: the context width of another Flux (T5-XXL's 4096 for a full-width one)."""
    ensure_comfyui()
    import comfy.text_encoders.flux as flux

    options = {"clip_l_model_config": _clip_config(TINY_CLIP_L_DIM), "t5xxl_model_config": _t5_config(t5_width)}
    return _tiny_clip(flux.FluxTokenizer, flux.FluxClipModel, options, seed)


def tiny_sd3_clip(seed: int = 0) -> Any:
    """comfy.sd.CLIP with SD3's real tokenizers and tiny CLIP-L (16), CLIP-G (16, projected 16) and a
    2-layer T5 of T5-XXL's width 4096 (its embedding table makes it 130 M parameters): CONDITIONING
    [1, 77 + ≥77, 4096] (CLIP-L||G padded to 4096, then T5), pooled [1, 32]; fits
    tiny_sd3_model(context_dim=SD3_CONTEXT_DIM, pooled_dim=SD3_TINY_POOLED_DIM)."""
    ensure_comfyui()
    import comfy.text_encoders.sd3_clip as sd3_clip

    options = {"clip_l_model_config": _clip_config(TINY_CLIP_L_DIM),
               "clip_g_model_config": _clip_config(TINY_CLIP_G_DIM, projection_dim=TINY_CLIP_G_DIM),
               "t5xxl_model_config": _t5_config(SD3_CONTEXT_DIM)}
    return _tiny_clip(sd3_clip.SD3Tokenizer, sd3_clip.SD3ClipModel, options, seed)
