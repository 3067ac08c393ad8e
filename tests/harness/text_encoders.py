"""Tiny text encoders of the LLM-conditioned families, built through ComfyUI's own classes:
``comfy.sd.CLIP(ClipTarget(tokenizer, te), model_options={"<name>_model_config": {...}})`` with
random weights (fill_random_), and the real tokenizers (Qwen2 BPE and ByT5 ship with ComfyUI;
Gemma's SentencePiece model lives in the checkpoint, so a tiny one is trained here).

The ``*_width`` functions give the width of each family's CONDITIONING, for model-side tests.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from .comfyui import ensure_comfyui
from .tiny_models import fill_random_

LLM_HIDDEN = 32  # head_dim stays 128 (a class attribute of the configs), so one head of 128
LUMINA2_PROMPTS = ("a photo of a cat riding a bicycle", "a photo of a dog riding a red bicycle",
                   "You are an assistant designed to generate superior images with the superior degree of "
                   "image-text alignment based on textual prompts or user prompts. <Prompt Start>")


def _llm_config(layers: int, **extra: Any) -> dict[str, Any]:
    return {"hidden_size": LLM_HIDDEN, "intermediate_size": 2 * LLM_HIDDEN, "num_hidden_layers": layers,
            "num_attention_heads": 1, "num_key_value_heads": 1, **extra}


def _tiny_clip(tokenizer: type, te: type, model_options: dict[str, Any], seed: int,
               tokenizer_data: dict | None = None, build: Any = None) -> Any:
    import comfy.sd
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(tokenizer, te)
    clip = comfy.sd.CLIP(target, tokenizer_data=tokenizer_data or {},
                         model_options={"dtype": torch.float32, **model_options})
    fill_random_(clip.cond_stage_model, seed)
    return clip


def z_image_width() -> int:
    """Z-Image's CONDITIONING width with :func:`tiny_z_image_clip` (its Qwen3's layer -2)."""
    return LLM_HIDDEN


def tiny_z_image_clip(seed: int = 0) -> Any:
    """Z-Image's Qwen3 (3 layers, 32 wide; about 5 M parameters, mostly the 151k-row embedding)."""
    ensure_comfyui()
    import comfy.text_encoders.z_image as z_image

    return _tiny_clip(z_image.ZImageTokenizer, z_image.te(), {"qwen3_4b_model_config": _llm_config(3)}, seed)


def flux2_klein_width() -> int:
    """Flux.2 klein's CONDITIONING width: its Qwen3's layers 9, 18 and 27 side by side."""
    return 3 * LLM_HIDDEN


def tiny_flux2_klein_clip(seed: int = 0) -> Any:
    """Flux.2 klein's Qwen3 (28 layers, since it reads layers 9/18/27; 32 wide), padded to 512."""
    ensure_comfyui()
    import comfy.text_encoders.flux as flux

    return _tiny_clip(flux.KleinTokenizer, flux.klein_te(), {"qwen3_4b_model_config": _llm_config(28)}, seed)


TEKKEN_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                         "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                         "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")
TEKKEN_WORDS = ("(", "a", "photo", "of", "cat", "dog", "red", "blue", "riding", "bicycle", "You", "are", "an", "AI")


def tiny_tekken_json(words: tuple[str, ...] = TEKKEN_WORDS) -> bytes:
    """A tiny Mistral Tekken vocabulary (the JSON that Flux.2 dev's text-encoder file carries): Mistral's
    special tokens at their ranks (<s> 1, <pad> 11, [SYSTEM_PROMPT] 17), the 256 bytes, and every prefix of
    each word and of its space-led form, so that byte-level BPE merges them into whole words."""
    import base64
    import json

    merged = sorted({piece for word in words for form in (word, " " + word)
                     for piece in (form[:end] for end in range(2, len(form) + 1))}, key=lambda p: (len(p), p))
    pieces = [bytes([b]) for b in range(256)] + [p.encode() for p in merged]
    vocab = [{"rank": rank, "token_bytes": base64.b64encode(piece).decode()} for rank, piece in enumerate(pieces)]
    special = [{"rank": rank, "token_str": token, "is_control": True} for rank, token in enumerate(TEKKEN_SPECIAL_TOKENS)]
    config = {"pattern": "", "num_vocab_tokens": len(special) + len(vocab),
              "default_vocab_size": len(special) + len(vocab), "default_num_special_tokens": len(special)}
    return json.dumps({"config": config, "vocab": vocab, "special_tokens": special}).encode()


def flux2_dev_width() -> int:
    """Flux.2 dev's CONDITIONING width: its Mistral's layers 10, 20 and 30 side by side."""
    return 3 * LLM_HIDDEN


def tiny_flux2_dev_clip(seed: int = 0) -> Any:
    """Flux.2 dev's Mistral 3 (31 layers, since it reads layers 10/20/30; 32 wide) with a tiny Tekken
    vocabulary (tiny_tekken_json; the real one lives in the text-encoder file)."""
    ensure_comfyui()
    import comfy.text_encoders.flux as flux

    options = {"mistral3_24b_model_config": _llm_config(31, vocab_size=512)}
    return _tiny_clip(flux.Flux2Tokenizer, flux.flux2_te(), options, seed,
                      tokenizer_data={"tekken_model": tiny_tekken_json()})


def qwen_image_width() -> int:
    """Qwen-Image's (and HunyuanImage's) Qwen CONDITIONING width with the tiny Qwen2.5-VL."""
    return LLM_HIDDEN


def _without_vision_tower(te: type, name: str, tiny_tower: bool = False) -> type:
    """``te`` whose Qwen2.5-VL is built on the meta device, its 1280-wide vision tower (3.8 GB)
    then dropped (text prompts do not use it) or, with ``tiny_tower``, replaced by ComfyUI's own
    vision transformer at width 32 with one block (Qwen-Image-Edit's pictures in the prompt: the
    column count per picture is the real one, from the real processor), and the whole given real
    (empty) CPU tensors."""

    class TextOnly(te):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device="meta", dtype=dtype, model_options=model_options)
            transformer = getattr(self, name).transformer
            transformer.visual = torch.nn.Identity()
            if tiny_tower:
                import comfy.ops
                import comfy.text_encoders.qwen_vl as qwen_vl

                transformer.visual = qwen_vl.Qwen2VLVisionTransformer(
                    hidden_size=32, output_hidden_size=LLM_HIDDEN, intermediate_size=64, num_heads=1, num_layers=1,
                    device="meta", dtype=torch.float32, ops=comfy.ops.manual_cast)
            self.to_empty(device="cpu")

    return TextOnly


def tiny_qwen_image_clip(seed: int = 0) -> Any:
    """Qwen-Image's Qwen2.5-VL (3 layers, 32 wide) with a tiny vision tower (see _without_vision_tower)."""
    ensure_comfyui()
    import comfy.text_encoders.qwen_image as qwen_image

    te = _without_vision_tower(qwen_image.te(), "qwen25_7b", tiny_tower=True)
    return _tiny_clip(qwen_image.QwenImageTokenizer, te, {"qwen25_7b_model_config": _llm_config(3)}, seed)


def hunyuan_image_byt5_width() -> int:
    """HunyuanImage's ByT5 CONDITIONING width (``conditioning_byt5small``): fixed by its mapper."""
    return 1472


def tiny_hunyuan_image_clip(seed: int = 0) -> Any:
    """HunyuanImage 2.1's Qwen2.5-VL (4 layers: it reads layer -3; 32 wide, no vision tower) and
    ByT5-small (its own config: 1472 wide, as the model's ByT5 mapper expects)."""
    ensure_comfyui()
    import comfy.text_encoders.hunyuan_image as hunyuan_image

    te = _without_vision_tower(hunyuan_image.te(), "qwen25_7b")
    options = {"qwen25_7b_model_config": _llm_config(4),
               "byt5_small_model_config": {"num_layers": 1, "d_ff": 64, "num_heads": 2, "d_kv": 16}}
    return _tiny_clip(hunyuan_image.HunyuanImageTokenizer, te, options, seed)


def tiny_spiece_model(prompts: tuple[str, ...] = LUMINA2_PROMPTS) -> bytes:
    """A tiny SentencePiece model trained on ``prompts`` (Gemma's lives in the checkpoint)."""
    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(prompts), model_writer=buf, vocab_size=60, hard_vocab_limit=False,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=3, bos_id=2, minloglevel=2)
    return buf.getvalue()


def lumina2_width() -> int:
    """Lumina 2's CONDITIONING width with :func:`tiny_lumina2_clip` (Gemma 2's layer -2)."""
    return LLM_HIDDEN


def tiny_lumina2_clip(seed: int = 0) -> Any:
    """Lumina 2's Gemma 2 (3 layers, 32 wide, vocabulary 256) with a tiny trained SentencePiece model."""
    ensure_comfyui()
    import comfy.text_encoders.lumina2 as lumina2

    options = {"gemma2_2b_model_config": _llm_config(3, vocab_size=256)}
    return _tiny_clip(lumina2.LuminaTokenizer, lumina2.te(), options, seed,
                      tokenizer_data={"spiece_model": tiny_spiece_model()})


def chroma_width() -> int:
    """Chroma's CONDITIONING width with :func:`tiny_chroma_clip` (its T5)."""
    return 32


def tiny_chroma_clip(seed: int = 0) -> Any:
    """Chroma's T5-XXL as PixArt's (no padding, no CLIP): 2 layers, 32 wide."""
    ensure_comfyui()
    import comfy.text_encoders.pixart_t5 as pixart_t5

    options = {"t5xxl_model_config": {"d_model": chroma_width(), "d_ff": 64, "num_layers": 2, "num_heads": 2,
                                      "d_kv": 16}}
    return _tiny_clip(pixart_t5.PixArtTokenizer, pixart_t5.pixart_te(), options, seed)
