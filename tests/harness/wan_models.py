"""Tiny random-weight Wan 2.1 / 2.2 text- and image-to-video models built through ComfyUI's own classes
(families.md §6), a tiny Wan file that the stock UNETLoader reads through its safetensors metadata
(``config.transformer``: 0.33.0's detection lets it override the widths it would infer), and a tiny
umT5 text encoder with a SentencePiece model trained here (Wan's lives in its checkpoint).

The models are 64 wide (2 heads of 32) with 2 blocks; their context is [B, 512, WAN_TEXT_DIM]
(umT5 always gives 512 columns), their latent [B, 16 (2.2 5B: 48), F, H, W]. The image-to-video
ones take 36 input channels (the latent, then the 4-channel mask and 16-channel image latent that
``WanImageToVideo`` sets: :func:`image_to_video_conditioning`), and Wan 2.1 I2V also the input
picture's CLIP-vision features (257 tokens of 1280, projected by its ``img_emb``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from harness.comfyui import ensure_comfyui
from harness.tiny_models import fill_random_

WAN_TEXT_DIM = 32
WAN_COLUMNS = 512  # umT5's min_length: every prompt's context has 512 columns
UMT5_PROMPTS = ("a photo of a cat riding a bicycle", "a photo of a dog riding a red bicycle",
                "a cat and a dog walking on a beach at sunset", "a video of a bird flying over the sea")


def wan_unet_config(channels: int = 16, layers: int = 2, dim: int = 64, heads: int = 2,
                    text_dim: int = WAN_TEXT_DIM) -> dict[str, Any]:
    return dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=WAN_COLUMNS,
                in_dim=channels, out_dim=channels, dim=dim, ffn_dim=2 * dim, freq_dim=256, text_dim=text_dim,
                num_heads=heads, num_layers=layers, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)


def _patcher(model_config: Any, seed: int):
    import comfy.model_management as mm
    import comfy.model_patcher

    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def tiny_wan21_model(seed: int = 0, **config: Any):
    """A ``WAN21`` (the ``WAN21_T2V`` config: Wan 2.1 T2V, Wan 2.2 A14B), 16 latent channels."""
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.WAN21_T2V(wan_unet_config(16, **config)), seed)


def tiny_wan22_model(seed: int = 0):
    """A ``WAN22`` (the ``WAN22_T2V`` config: Wan 2.2 TI2V 5B), 48 latent channels."""
    ensure_comfyui()
    import comfy.supported_models

    return _patcher(comfy.supported_models.WAN22_T2V(wan_unet_config(48)), seed)


CLIP_VISION_TOKENS, CLIP_VISION_DIM = 257, 1280  # CLIP-ViT-H's penultimate hidden states, as Wan 2.1 I2V reads them
I2V_CHANNELS = 16 + 4 + 16


def tiny_wan21_i2v_model(seed: int = 0, **config: Any):
    """A ``WAN21`` with the ``WAN21_I2V`` config (Wan 2.1 I2V 14B): 36 input channels, a CLIP-vision
    embedding, and image-to-video cross-attention (``k_img`` / ``v_img``) in every block."""
    ensure_comfyui()
    import comfy.supported_models

    unet = {**wan_unet_config(16, **config), "model_type": "i2v", "in_dim": I2V_CHANNELS}
    return _patcher(comfy.supported_models.WAN21_I2V(unet), seed)


def tiny_wan22_i2v_expert(seed: int = 0, **config: Any):
    """A Wan 2.2 A14B I2V expert as ComfyUI detects its file: a ``WAN21`` with the ``WAN21_T2V``
    config and 36 input channels (no CLIP-vision embedding, text-to-video cross-attention)."""
    ensure_comfyui()
    import comfy.supported_models

    unet = {**wan_unet_config(16, **config), "in_dim": I2V_CHANNELS}
    return _patcher(comfy.supported_models.WAN21_T2V(unet), seed)


def image_to_video_conditioning(conditioning: list, frames: int, height: int = 8, width: int = 8,
                                clip_vision: bool = True, seed: int = 4) -> list:
    """``conditioning`` with what ``WanImageToVideo`` sets on it for a start image: its latent
    (here random, for the VAE-encoded picture and grey frames), the mask that keeps the first
    latent frame (0 there, 1 after), and, with ``clip_vision``, a CLIP-vision output whose
    ``penultimate_hidden_states`` (random here) become the model's ``clip_fea``."""
    import comfy.clip_vision
    import node_helpers

    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 16, frames, height, width, generator=generator)
    mask = torch.ones(1, 1, frames, height, width)
    mask[:, :, :1] = 0.0
    values = {"concat_latent_image": image, "concat_mask": mask}
    if clip_vision:
        output = comfy.clip_vision.Output()
        output["penultimate_hidden_states"] = torch.randn(1, CLIP_VISION_TOKENS, CLIP_VISION_DIM, generator=generator)
        values["clip_vision_output"] = output
    return node_helpers.conditioning_set_values(conditioning, values)


def tiny_wan21_vae(seed: int = 3) -> Any:
    """A random Wan 2.1 VAE through ``comfy.sd.VAE`` (which builds it at its real width, 96: its
    detection fixes the width), for ``WanImageToVideo``'s encoding of a start image."""
    ensure_comfyui()
    import comfy.ldm.wan.vae
    import comfy.sd

    from harness.family_files import WAN21_VAE_CONFIG

    vae = comfy.ldm.wan.vae.WanVAE(**WAN21_VAE_CONFIG)
    fill_random_(vae, seed)
    return comfy.sd.VAE(sd=vae.state_dict())


def random_conditioning(batch: int = 1, seed: int = 1, words: int = 6, text_dim: int = WAN_TEXT_DIM) -> list:
    """A umT5-like CONDITIONING: ``words`` random columns, then zero pad columns up to 512 (umT5
    zeroes its pad columns' output)."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.zeros(batch, WAN_COLUMNS, text_dim)
    context[:, :words] = torch.randn(batch, words, text_dim, generator=generator)
    return [[context, {}]]


def loader_reads_metadata() -> bool:
    """Whether this ComfyUI's diffusion-model loader passes the file's metadata to the detection (0.33.0)."""
    import inspect

    import comfy.sd

    return "metadata" in inspect.signature(comfy.sd.load_diffusion_model_state_dict).parameters


def wan_file_layout() -> dict[str, int]:
    """The widths of the tiny Wan file: 64 wide with 2 heads and a 32-wide text where the loader reads
    the metadata; else what the detection infers from the tensors (0.3.64: heads of 128, a 4096-wide text)."""
    if loader_reads_metadata():
        return {"dim": 64, "heads": 2, "text_dim": WAN_TEXT_DIM}
    return {"dim": 128, "heads": 1, "text_dim": 4096}


def wan_file_contents(seed: int = 3) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the safetensors metadata of the tiny Wan 2.1 T2V file (make_wan_file)."""
    layout = wan_file_layout()
    model = tiny_wan21_model(seed, **layout).model.diffusion_model
    config = {"transformer": {"dim": layout["dim"], "num_heads": layout["heads"], "text_dim": layout["text_dim"],
                              "ffn_dim": 2 * layout["dim"]}}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    return tensors, {"config": json.dumps(config)}


def make_wan_file(directory: Path, seed: int = 3) -> Path:
    """A tiny Wan 2.1 T2V diffusion-model file whose safetensors metadata ``config.transformer`` gives
    the widths (0.33.0's detection would otherwise take 128-wide heads and a 4096-wide text)."""
    import safetensors.torch

    tensors, metadata = wan_file_contents(seed)
    path = directory / "tiny_wan21_t2v.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def tiny_umt5_spiece_model(prompts: tuple[str, ...] = UMT5_PROMPTS) -> bytes:
    """A tiny SentencePiece model in umT5's id layout (pad 0, end 1, unk 2, no start token)."""
    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(prompts), model_writer=buf, vocab_size=60, hard_vocab_limit=False,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return buf.getvalue()


def tiny_umt5_clip(seed: int = 0, width: int = WAN_TEXT_DIM) -> Any:
    """Wan's umT5 text encoder through ComfyUI's classes: 2 layers, ``width`` wide (32; the tiny Wan
    file's text width to feed that file), vocabulary 128."""
    ensure_comfyui()
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.wan as wan

    options = {"umt5xxl_model_config": {"d_model": width, "d_ff": 64, "num_layers": 2, "num_heads": 2,
                                        "d_kv": 16, "vocab_size": 128}}
    target = comfy.supported_models_base.ClipTarget(wan.WanT5Tokenizer, wan.te())
    clip = comfy.sd.CLIP(target, tokenizer_data={"spiece_model": tiny_umt5_spiece_model()},
                         model_options={"dtype": torch.float32, **options})
    fill_random_(clip.cond_stage_model, seed)
    return clip
