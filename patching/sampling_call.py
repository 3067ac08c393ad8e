"""What the pack's attention patches read from a UNet call's ``transformer_options`` (plain torch):
the sampling step it belongs to, and which rows of its batch are which chunk."""

from __future__ import annotations

import torch

COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond values


def sampling_step(sigma: float, schedule: torch.Tensor) -> int:
    """The index of the sampling step at ``sigma`` in the sampler's σ list ``schedule`` (descending,
    ending with the last σ): how many listed σ lie above it, capped at the last step."""
    above = int((schedule.detach().float().cpu() > sigma * (1 + 1e-4)).sum())
    return min(above, len(schedule) - 2)


def chunk_rows(extra_options: dict, rows: int) -> list[tuple[slice, int]] | None:
    """``(rows, COND or UNCOND)`` for each chunk that ComfyUI batched into this call (its
    ``cond_or_uncond`` order), or None for a call made outside sampling."""
    chunks = extra_options.get("cond_or_uncond")
    if not chunks:
        return None
    size = rows // len(chunks)
    return [(slice(i * size, (i + 1) * size), chunk) for i, chunk in enumerate(chunks)]
