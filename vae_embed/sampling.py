"""Stochastic text embeddings at sampling time: token noise (the paper's Fig. 3 baseline) and draws
from an embedding VAE, one reproducible draw per batch item (and per step where asked)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .model import EmbeddingVAE

_ITEM_STRIDE = 1_000_003  # a prime: (seed, item, step) never collide for steps below it


def item_noise(shape: Sequence[int], seed: int, item: int, step: int = 0) -> torch.Tensor:
    """Standard normal noise for batch ``item`` at ``step``: the same seed gives the same draw on any
    device and batch size (it is drawn on the CPU from its own generator)."""
    generator = torch.Generator().manual_seed((seed * _ITEM_STRIDE + item) * _ITEM_STRIDE + step)
    return torch.randn(tuple(shape), generator=generator)


def token_noise(embedding: torch.Tensor, columns: Sequence[int], scale: float, noise: torch.Tensor,
                parts: Sequence[int] | None = None) -> torch.Tensor:
    """``embedding [tokens, dim]`` with ``scale``·‖token‖·n/√d added to the tokens in ``columns``
    (``noise [tokens, dim]`` standard normal), so the noise is ``scale`` times each token's norm on
    average. ``parts`` splits the channels into encoders that are scaled separately (SDXL: 768 of
    CLIP-L then 1280 of CLIP-G). Returns a new tensor."""
    out = embedding.clone()
    if scale == 0 or not columns:
        return out
    index = torch.as_tensor(list(columns), dtype=torch.long, device=embedding.device)
    start = 0
    for width in parts or [embedding.shape[-1]]:
        part = embedding[index, start : start + width].float()
        step = noise[index, start : start + width].to(part.device, torch.float32)
        step = step * (scale * part.norm(dim=-1, keepdim=True) / width**0.5)
        out[index, start : start + width] = (part + step).to(embedding.dtype)
        start += width
    return out


@dataclass
class VAEDraws:
    """Draws from an embedding VAE: item ``i`` at step ``k`` uses ``item_noise(seed, i, k)`` (``k`` is 0
    for every step unless ``per_step``); ``temperature`` scales the latent noise (0: the mean)."""

    vae: EmbeddingVAE
    seed: int
    temperature: float = 1.0
    per_step: bool = True

    @torch.no_grad()
    def sample(self, embeddings: torch.Tensor, items: Sequence[int], step: int, timestep: torch.Tensor) -> torch.Tensor:
        """``embeddings [n, tokens, dim]`` (one row per entry of ``items``) → sampled rows, same dtype
        and device. ``timestep`` is the model timestep (0…999) the VAE is conditioned on."""
        device = embeddings.device
        vae = self.vae.to(device)
        draw_step = step if self.per_step else 0
        noise = torch.stack([item_noise(self.vae.latent_shape(1)[1:], self.seed, item, draw_step) for item in items])
        sampled, _, _ = vae(embeddings.float(), timestep.reshape(1).float().to(device), noise.to(device), self.temperature)
        return sampled.to(embeddings.dtype)
