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


class StepClock:
    """The sampling step ``(step, number of steps)`` of a call's ``transformer_options``, or None
    for a call made outside sampling (e.g. an inversion's direct model call). Worked out once per
    step: every call of one step carries the same ``sigmas`` tensor."""

    def __init__(self) -> None:
        self._cache: tuple[object, object, tuple[int, int]] | None = None

    def reset(self) -> None:
        self._cache = None

    def position(self, extra_options: dict) -> tuple[int, int] | None:
        sigmas, schedule = extra_options.get("sigmas"), extra_options.get("sample_sigmas")
        if sigmas is None or schedule is None or len(schedule) < 2:
            return None
        cached = self._cache
        if cached is not None and cached[0] is sigmas and cached[1] is schedule:
            return cached[2]
        position = (sampling_step(float(sigmas.reshape(-1)[0]), schedule), len(schedule) - 1)
        self._cache = (sigmas, schedule, position)
        return position


def chunk_rows(extra_options: dict, rows: int) -> list[tuple[slice, int]] | None:
    """``(rows, COND or UNCOND)`` for each chunk that ComfyUI batched into this call (its
    ``cond_or_uncond`` order), or None for a call made outside sampling."""
    chunks = extra_options.get("cond_or_uncond")
    if not chunks:
        return None
    size = rows // len(chunks)
    return [(slice(i * size, (i + 1) * size), chunk) for i, chunk in enumerate(chunks)]
