"""Model files the tests generate for ComfyUI's real loaders, cached in the user cache
(harness.pack.cache_dir) or written where a test asks: the random-weight SD1.5 checkpoint that
CheckpointLoaderSimple loads, a CLIP vision file for CLIPVisionLoader, a LoRA for the tiny SD1.5,
the embedding VAEs the example workflows load; and the safetensors writing and metadata they share.
Cached files carry their recipe in the metadata and are written atomically, so a stale or partial
file is regenerated."""

from __future__ import annotations

import inspect
import json
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness.comfyui import ensure_comfyui
from harness.pack import PACK, cache_dir, import_pack
from harness.tiny_models import fill_random_, unet_config

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher

CHECKPOINT_NAME = "tiny_sd15.safetensors"
_CHECKPOINT_RECIPE = "comfyui_prompt_edit tiny_sd15 v2"
"""Stored in the checkpoint's metadata; change it when the recipe changes to force regeneration."""


def sd15_checkpoint_path() -> Path:
    """Where the tiny SD1.5 checkpoint is cached (its own folder, registered as a checkpoints dir)."""
    return cache_dir() / "checkpoints" / CHECKPOINT_NAME


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """The pack's atomic safetensors writer (base/safetensors_io.py)."""
    if PACK not in sys.modules:
        import_pack(execute_init=False)
    from comfyui_prompt_edit.base.safetensors_io import write_safetensors as write

    write(tensors, path, metadata)


def safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a complete safetensors file (size matches its header), else None."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        size = path.stat().st_size
    except (OSError, ValueError, struct.error):
        return None
    data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + header_len + data_end:
        return None
    return header.get("__metadata__", {})


def _safetensors_complete(path: Path) -> bool:
    """True if the file is a whole safetensors file written by this recipe."""
    return (safetensors_metadata(path) or {}).get("recipe") == _CHECKPOINT_RECIPE


def make_sd15_checkpoint(path: Path) -> Path:
    """Write a random-weight fp16 checkpoint that CheckpointLoaderSimple detects as SD15, unless a
    complete one from this recipe is there already. Returns `path`.

    Layout as real SD1.5 files: a one-level UNet (320 ch, context 768, 25.8 M params) under
    model.diffusion_model., a full-shape CLIP-L under cond_stage_model.transformer.text_model.
    (the stock loader passes no size options, so it must be full size), and the standard SD VAE
    under first_stage_model. All three come from ComfyUI's own modules and key mapping
    (BaseModel.state_dict_for_saving). The file is about 470 MB; it is written atomically.
    """
    path = Path(path)
    if _safetensors_complete(path):
        return path
    ensure_comfyui()
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.utils

    half = torch.float16
    config = unet_config(320, [1], [1], [1, 1], 1, 768, False)
    model_config = comfy.supported_models.SD15(config)
    model_config.set_inference_dtype(half, None)
    model = model_config.get_model({})
    fill_random_(model.diffusion_model, seed=0)
    clip = comfy.sd1_clip.SD1ClipModel(dtype=half)
    fill_random_(clip, seed=1)
    ddconfig = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4).to(half)
    fill_random_(vae, seed=2)
    parts = {"clip_state_dict": clip.state_dict(), "vae_state_dict": vae.state_dict()}
    if "unet_state_dict" in inspect.signature(model.state_dict_for_saving).parameters:
        parts["unet_state_dict"] = model.diffusion_model.state_dict()  # an argument since ComfyUI 0.11
    state_dict = model.state_dict_for_saving(**parts)
    state_dict = {k: v.to(half).contiguous() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(state_dict, path, {"recipe": _CHECKPOINT_RECIPE})
    return path


CLIP_VISION_NAME = "clip_vision_vit_l_14_random.safetensors"


def make_clip_vision_file(path: Path | None = None) -> Path:
    """A random-weight CLIP vision model in the smallest layout ComfyUI's CLIPVisionLoader
    recognises (ViT-L/14 at 224², projection 768 = the SD1.5 text width), fp16, about 600 MB;
    written once into the user cache (atomically) unless a complete one is there."""
    path = Path(path or cache_dir() / "clip_vision" / CLIP_VISION_NAME)
    if (safetensors_metadata(path) or {}).get("recipe") == "vit-l-14 random v1":
        return path
    ensure_comfyui()
    import comfy.clip_vision

    config = Path(comfy.clip_vision.__file__).parent / "clip_vision_config_vitl.json"
    with torch.inference_mode(False):
        model = comfy.clip_vision.ClipVisionModel(str(config))
        fill_random_(model.model, seed=5)
        state_dict = {k: v.detach().to(torch.float16).contiguous() for k, v in model.get_sd().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(state_dict, path, {"recipe": "vit-l-14 random v1"})
    return path


def register_checkpoint_dir(directory: Path) -> None:
    """Add `directory` to ComfyUI's "checkpoints" search paths (idempotent)."""
    ensure_comfyui()
    import folder_paths

    folder_paths.add_model_folder_path("checkpoints", str(directory))


def write_tiny_sd15_lora(path: Path, model: comfy.model_patcher.ModelPatcher, rank: int = 4, seed: int = 4) -> Path:
    """A random rank-`rank` LoRA on every attention projection of `model`'s UNet, in the generic
    key format ComfyUI's LoRA loader reads (``diffusion_model.<layer>.lora_up/lora_down.weight``)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, param in model.model.diffusion_model.named_parameters():
        if ".attn" in name and name.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")):
            layer = f"diffusion_model.{name[: -len('.weight')]}"
            out_features, in_features = param.shape
            tensors[f"{layer}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator) * in_features**-0.5
            tensors[f"{layer}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator) * rank**-0.5 * 0.5
    write_safetensors(tensors, path, {})
    return path


def write_workflow_embedding_vae(path: Path) -> None:
    """A small embedding VAE for the test checkpoint's 77 x 768 embeddings (sequence MLP, weights
    nudged off the zero-initialised identity so it varies what it is given), saved under ``path``
    as a trainer would: conditional if the file name says so, else null-text. What the example
    workflows' Load Embedding VAE nodes load in the tests."""
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    generator = torch.Generator().manual_seed(0)
    vae = EmbeddingVAE(EmbeddingVAEConfig("sequence_mlp", 77, 768, latent=8, hidden=32)).requires_grad_(False)
    for parameter in vae.parameters():
        parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    TrainedEmbeddingVAE(vae, "conditional" if "conditional" in path.name else "null-text").save(path)
