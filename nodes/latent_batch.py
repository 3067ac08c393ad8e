"""Latent batches for nodes that sample several prompts from one initial noise."""

from __future__ import annotations

import torch


def repeat_latent(latent: dict, count: int) -> dict:
    """``count`` copies of the latent's first item, all with its noise (same ``batch_index``)."""
    samples = latent["samples"]
    index = latent.get("batch_index", list(range(samples.shape[0])))[0]
    out = {k: v for k, v in latent.items() if k not in ("samples", "batch_index", "noise_mask")}
    out["samples"] = samples[:1].repeat((count,) + (1,) * (samples.dim() - 1))
    out["batch_index"] = [index] * count
    if isinstance(latent.get("noise_mask"), torch.Tensor):
        out["noise_mask"] = latent["noise_mask"][:1]
    return out
