"""CLIP features for the metrics, from ComfyUI's CLIP and CLIP vision objects (duck-typed: their
methods are called, ComfyUI is not imported): what CLIP-T, CLIP-I and the class score compare."""

from __future__ import annotations

from typing import Callable

import torch


def clip_text_features(clip, prompt: str) -> torch.Tensor:
    """The prompt's projected pooled CLIP text embedding (what CLIP compares with images)."""
    return clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)[1].float()


def clip_image_features(clip_vision) -> Callable[[torch.Tensor], torch.Tensor]:
    """IMAGE batch -> CLIP vision's projected image embeddings."""
    return lambda images: clip_vision.encode_image(images)["image_embeds"].float()
