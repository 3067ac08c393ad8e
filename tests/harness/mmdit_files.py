"""Random-weight Flux and SD3.5 model files for ComfyUI's real loaders, as the Flux / SD3.5 example
workflows load them: a Flux-dev diffusion model (UNETLoader), an SD3.5 checkpoint with its MMDiT-X
block and 16-channel VAE and no text encoders, like the official file (CheckpointLoaderSimple), and
a 16-channel VAE like Flux's ae.safetensors (VAELoader). The models are mmdit_models' tiny ones;
the files are cached in the user cache (harness.pack.cache_dir), carry their recipe in their
metadata and are written atomically (model_files), so a stale or partial file is regenerated.

ComfyUI finds a file's layout by model detection (comfy.model_detection). ComfyUI 0.33.0 reads
Flux's widths from the weights' shapes but assumes FLUX.1's head width (RoPE axes 16+56+56 = 128);
0.3.64 assumes FLUX.1's widths outright (hidden 3072, 24 heads, context 4096). So the Flux file is
the smallest one the host's detection reads back as it was written (flux_file_layout): 128 wide on
0.33.0, one double and one single block at full width (543 M parameters, 1.1 GB) on 0.3.64, with a
Flux text encoder of that context width (flux_t5_width). SD3's detection reads every width from
the shapes on both hosts.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

from harness import mmdit_models
from harness.comfyui import ensure_comfyui
from harness.model_files import safetensors_metadata, write_safetensors
from harness.pack import cache_dir
from harness.tiny_models import fill_random_

_RECIPE = "comfyui_prompt_edit mmdit files v2"  # v2: q/k norm weights of order one
FLUX_AXES = (16, 56, 56)  # FLUX.1's RoPE axes: the head width 128 both hosts' detection assumes
SMALL_FLUX_LAYOUT: dict[str, Any] = {"hidden": 128, "heads": 1, "depth": 1, "single": 2, "axes_dim": FLUX_AXES,
                                     "context_dim": mmdit_models.MMDIT_CONTEXT_DIM}
FULL_WIDTH_FLUX_LAYOUT: dict[str, Any] = {"hidden": 3072, "heads": 24, "depth": 1, "single": 1, "axes_dim": FLUX_AXES,
                                          "context_dim": 4096}
# What detection must read back from the Flux file, as flux_unet_config names it
_FLUX_DETECTED_KEYS = ("hidden_size", "num_heads", "depth", "depth_single_blocks", "axes_dim", "context_in_dim",
                       "vec_in_dim", "guidance_embed")
SD35_LAYOUT: dict[str, Any] = {"context_dim": mmdit_models.SD3_CONTEXT_DIM, "pooled_dim": mmdit_models.SD3_TINY_POOLED_DIM,
                               "x_block_self_attn_layers": (0,)}
VAE_DDCONFIG = {"double_z": True, "z_channels": mmdit_models.MMDIT_LATENT_CHANNELS, "resolution": 256, "in_channels": 3,
                "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                "dropout": 0.0}  # SD3's and Flux's VAE: SD's, with 16 latent channels
UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."  # a checkpoint's, as ComfyUI reads them


def mmdit_files_dir() -> Path:
    """The cache folder of these files, registered as a diffusion_models, checkpoints and vae folder."""
    return cache_dir() / "mmdit"


def _detected_flux_config(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    import comfy.model_detection

    return comfy.model_detection.detect_unet_config(state_dict, "")


def _flux_state_dict(layout: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    return mmdit_models.tiny_flux_model(seed=seed, **layout).model.diffusion_model.state_dict()


def _reads_back(state_dict: dict[str, torch.Tensor], layout: dict[str, Any]) -> bool:
    expected = mmdit_models.flux_unet_config(**layout)
    detected = _detected_flux_config(state_dict)
    return all(list(detected.get(key, ())) == list(expected[key]) if key == "axes_dim"
               else detected.get(key) == expected[key] for key in _FLUX_DETECTED_KEYS)


@functools.cache
def flux_file_layout() -> dict[str, Any]:
    """The layout of the Flux file on this host: SMALL_FLUX_LAYOUT if its detection reads it back
    from the weights (asked of the host with the small model's own state dict), else FULL_WIDTH_FLUX_LAYOUT."""
    ensure_comfyui()
    return SMALL_FLUX_LAYOUT if _reads_back(_flux_state_dict(SMALL_FLUX_LAYOUT), SMALL_FLUX_LAYOUT) else FULL_WIDTH_FLUX_LAYOUT


def flux_t5_width() -> int:
    """The context width of the Flux file: the T5 width of the text encoder it needs."""
    return flux_file_layout()["context_dim"]


def _is_current(path: Path, recipe: str) -> bool:
    return (safetensors_metadata(path) or {}).get("recipe") == recipe


def _write_fp16(tensors: dict[str, torch.Tensor], path: Path, recipe: str) -> Path:
    """fp16 as the official files (halves the full-width Flux's 2.2 GB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors({k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}, path, {"recipe": recipe})
    return path


def make_flux_diffusion_model_file() -> Path:
    """A Flux-dev diffusion model (bare keys, as flux1-dev.safetensors) of flux_file_layout(),
    written once; its name says its width, so the two hosts' files do not overwrite each other."""
    layout = flux_file_layout()
    path = mmdit_files_dir() / f"tiny_flux1_dev_w{layout['hidden']}.safetensors"
    recipe = f"{_RECIPE} flux {json.dumps(layout)}"
    if _is_current(path, recipe):
        return path
    state_dict = _flux_state_dict(layout)
    if not _reads_back(state_dict, layout):
        raise RuntimeError(f"this ComfyUI's model detection does not read back the Flux layout {layout}")
    return _write_fp16(state_dict, path, recipe)


def _vae_state_dict(seed: int = 2) -> dict[str, torch.Tensor]:
    import comfy.ldm.models.autoencoder

    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=VAE_DDCONFIG, embed_dim=VAE_DDCONFIG["z_channels"])
    fill_random_(vae, seed)
    return vae.state_dict()


def make_mmdit_vae_file() -> Path:
    """A random 16-channel VAE (bare keys, as Flux's ae.safetensors; 84 M parameters, 170 MB), written once."""
    path = mmdit_files_dir() / "tiny_vae_16ch.safetensors"
    recipe = f"{_RECIPE} vae {json.dumps(VAE_DDCONFIG)}"
    if _is_current(path, recipe):
        return path
    ensure_comfyui()
    return _write_fp16(_vae_state_dict(), path, recipe)


def make_sd35_checkpoint() -> Path:
    """An SD3.5 checkpoint as sd3.5_large.safetensors is laid out (the MMDiT under
    model.diffusion_model., the VAE under first_stage_model., no text encoders): tiny_sd3_model with
    SD3.5's image-only attention in block 0, context 4096 and pooled 32 (tiny_sd3_clip's), written once."""
    path = mmdit_files_dir() / "tiny_sd35.safetensors"
    recipe = f"{_RECIPE} sd3.5 {json.dumps(SD35_LAYOUT)} vae {json.dumps(VAE_DDCONFIG)}"
    if _is_current(path, recipe):
        return path
    ensure_comfyui()
    diffusion_model = mmdit_models.tiny_sd3_model(**SD35_LAYOUT).model.diffusion_model.state_dict()
    tensors = {UNET_PREFIX + key: value for key, value in diffusion_model.items()}
    tensors.update({VAE_PREFIX + key: value for key, value in _vae_state_dict().items()})
    return _write_fp16(tensors, path, recipe)


def make_text_encoder_stand_in() -> Path:
    """A placeholder under the text-encoder names of the server the browser tests open the
    workflows on: the loaders' lists must offer the names the workflows choose, but the files are
    never loaded (a stock loader would build a full-size T5-XXL whatever a file holds)."""
    path = mmdit_files_dir() / "text_encoder_stand_in.safetensors"
    recipe = f"{_RECIPE} text encoder stand-in"
    if not _is_current(path, recipe):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors({"stand_in": torch.zeros(1)}, path, {"recipe": recipe})
    return path


def register_mmdit_files() -> dict[str, str]:
    """Write the files (once) and add their folder to ComfyUI's diffusion_models, checkpoints and
    vae search paths; returns the file names by the loader input that takes each."""
    names = {"unet_name": make_flux_diffusion_model_file().name, "ckpt_name": make_sd35_checkpoint().name,
             "vae_name": make_mmdit_vae_file().name}
    import folder_paths

    for folder in ("diffusion_models", "checkpoints", "vae"):
        folder_paths.add_model_folder_path(folder, str(mmdit_files_dir()))
    return names
