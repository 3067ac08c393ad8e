"""What the newer families' example workflows load (example_workflows/{qwen_image,flux2_klein,z_image,
chroma,wan}_*.json), at test size.

Through the stock loaders where ComfyUI's detection reads a tiny file (families.md §6):
- a Flux.2 klein diffusion model (UNETLoader): 128 wide, the head width 128 detection assumes,
  no guidance input (klein base runs real CFG), a context as wide as the tiny klein text encoder's;
- a Wan 2.1 T2V diffusion model (UNETLoader; wan_models.wan_file_contents): 0.33.0 reads its widths
  from the file's metadata (64 wide, a 32-wide text), 0.3.64 infers them (heads of 128, a 4096-wide
  text), so the tiny umT5 that stands in for its text encoder is as wide as the file's text;
- Qwen-Image's VAE and Wan's (VAELoader), a Wan 2.1 VAE: 0.3.64 assumes its width (96), so it is
  written at that width for both hosts;
- Flux.2's VAE (VAELoader): SD's VAE with 32 latent channels and a batch norm over 2x2 patches.
Flux's ae.safetensors (Z-Image, Chroma) is mmdit_files' 16-channel VAE.

In process where detection assumes full widths (Qwen-Image, Chroma, Z-Image diffusion models) and
for every text encoder (a stock text-encoder loader keys on full widths and layer counts): the
family harness's tiny models, handed to the graph by test-only loader nodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from harness import chroma_models, flux2_models, mmdit_files, qwen_image_models, text_encoders, wan_models, z_image_models
from harness.comfyui import ensure_comfyui
from harness.model_files import write_safetensors
from harness.tiny_models import fill_random_

_RECIPE = "comfyui_prompt_edit family files v1"
KLEIN_LAYOUT: dict[str, Any] = {"hidden_size": 128, "num_heads": 1, "axes_dim": [32] * 4,
                                "context_in_dim": text_encoders.flux2_klein_width()}
WAN21_VAE_CONFIG = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
                    "temperal_downsample": [False, True, True], "dropout": 0.0}
FLUX2_VAE_DDCONFIG = {**mmdit_files.VAE_DDCONFIG, "z_channels": 32, "batch_norm_latent": True}

# The diffusion-model files the examples load, by the family each is (a tiny model stands in)
DIFFUSION_MODEL_FAMILIES = {"qwen_image_fp8_e4m3fn.safetensors": "qwen_image",
                            "qwen_image_edit_2509_fp8_e4m3fn.safetensors": "qwen_image",
                            "flux-2-klein-base-4b.safetensors": "flux2",
                            "z_image_turbo_bf16.safetensors": "z_image",
                            "Chroma1-HD.safetensors": "chroma",
                            "wan2.1_t2v_1.3B_fp16.safetensors": "wan"}
# What stands in for each family's text encoder, by CLIPLoader's type
TEXT_ENCODERS_BY_TYPE: dict[str, Callable[[], Any]] = {"qwen_image": text_encoders.tiny_qwen_image_clip,
                                                       "flux2": text_encoders.tiny_flux2_klein_clip,
                                                       "lumina2": text_encoders.tiny_z_image_clip,
                                                       "chroma": text_encoders.tiny_chroma_clip,
                                                       "wan": lambda: wan_models.tiny_umt5_clip(
                                                           width=wan_models.wan_file_layout()["text_dim"])}


def _klein_state_dict() -> dict[str, torch.Tensor]:
    config = {**flux2_models.flux2_unet_config(guidance_embed=False), **KLEIN_LAYOUT}
    ensure_comfyui()
    import comfy.supported_models

    model = comfy.supported_models.Flux2(config).get_model({})
    fill_random_(model.diffusion_model, 0)
    return model.diffusion_model.state_dict()


def make_flux2_klein_file() -> Path:
    """A Flux.2 klein base diffusion model (bare keys, as flux-2-klein-base-4b.safetensors), written
    once; needs a ComfyUI with Flux.2 (≥ 0.3.72)."""
    path = mmdit_files.mmdit_files_dir() / "tiny_flux2_klein.safetensors"
    recipe = f"{_RECIPE} klein {json.dumps(KLEIN_LAYOUT)}"
    if mmdit_files._is_current(path, recipe):
        return path
    return mmdit_files._write_fp16(_klein_state_dict(), path, recipe)


def make_wan21_file() -> Path:
    """A Wan 2.1 T2V diffusion model (wan2.1_t2v_1.3B_fp16.safetensors' keys, at the widths this host's
    loader reads: wan_models.wan_file_layout), written once; its name says its width, so the two
    hosts' files do not overwrite each other."""
    layout = wan_models.wan_file_layout()
    path = mmdit_files.mmdit_files_dir() / f"tiny_wan21_t2v_w{layout['dim']}.safetensors"
    recipe = f"{_RECIPE} wan21 t2v {json.dumps(layout)}"
    if mmdit_files._is_current(path, recipe):
        return path
    tensors, metadata = wan_models.wan_file_contents()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(tensors, path, {**metadata, "recipe": recipe})
    return path


def make_wan21_vae_file() -> Path:
    """A random Wan 2.1 VAE (qwen_image_vae.safetensors' layout), written once."""
    path = mmdit_files.mmdit_files_dir() / "tiny_wan21_vae.safetensors"
    recipe = f"{_RECIPE} wan21 vae {json.dumps(WAN21_VAE_CONFIG)}"
    if mmdit_files._is_current(path, recipe):
        return path
    ensure_comfyui()
    import comfy.ldm.wan.vae

    vae = comfy.ldm.wan.vae.WanVAE(**WAN21_VAE_CONFIG)
    fill_random_(vae, 3)
    return mmdit_files._write_fp16(vae.state_dict(), path, recipe)


def make_flux2_vae_file() -> Path:
    """A random Flux.2 VAE (flux2-vae.safetensors' layout), written once; the latent batch norm
    keeps mean 0 and variance 1 (random statistics would divide by negative variances)."""
    path = mmdit_files.mmdit_files_dir() / "tiny_flux2_vae.safetensors"
    recipe = f"{_RECIPE} flux2 vae {json.dumps(FLUX2_VAE_DDCONFIG)}"
    if mmdit_files._is_current(path, recipe):
        return path
    ensure_comfyui()
    import comfy.ldm.models.autoencoder

    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=FLUX2_VAE_DDCONFIG, embed_dim=FLUX2_VAE_DDCONFIG["z_channels"])
    fill_random_(vae, 4)
    vae.bn.running_mean.zero_()
    vae.bn.running_var.fill_(1.0)
    return mmdit_files._write_fp16(vae.state_dict(), path, recipe)


# The VAE files the examples load, by name: (the family whose host classes write it, or None, the maker).
# Flux.2's needs the host's latent batch norm (0.3.64, without Flux.2, cannot build it).
VAE_FILES: dict[str, tuple[str | None, Callable[[], Path]]] = {
    "ae.safetensors": (None, mmdit_files.make_mmdit_vae_file),
    "qwen_image_vae.safetensors": (None, make_wan21_vae_file),
    "wan_2.1_vae.safetensors": (None, make_wan21_vae_file),
    "flux2-vae.safetensors": ("flux2", make_flux2_vae_file)}


# The families whose tiny diffusion-model file the stock UNETLoader reads, and its maker
UNET_LOADER_FILES: dict[str, Callable[[], Path]] = {"flux2": make_flux2_klein_file, "wan": make_wan21_file}


def loads_through_unet_loader(family: str) -> bool:
    """Whether the stock UNETLoader reads the family's tiny file (Flux.2's and Wan's are narrow enough)."""
    return family in UNET_LOADER_FILES


def tiny_diffusion_model(family: str) -> Any:
    """The family's tiny ModelPatcher, for the families whose files the host cannot read at test size."""
    builders = {"qwen_image": qwen_image_models.tiny_qwen_image_model, "chroma": chroma_models.tiny_chroma_model,
                "z_image": z_image_models.tiny_z_image_model}
    return builders[family]()
