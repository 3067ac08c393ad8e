"""What the pack's attention patches read from a UNet call's ``transformer_options`` (plain torch):
the sampling step it belongs to, and which rows of its batch are which chunk."""

from __future__ import annotations

from ..base.sigma_steps import StepCache

COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond values


class StepClock:
    """The sampling step ``(step, number of steps)`` of a call's ``transformer_options`` (its
    ``sigmas`` along the sampler's ``sample_sigmas``), or None for a call made outside sampling
    (e.g. an inversion's direct model call)."""

    def __init__(self) -> None:
        self._steps = StepCache()

    def reset(self) -> None:
        self._steps.reset()

    def position(self, extra_options: dict) -> tuple[int, int] | None:
        sigmas, schedule = extra_options.get("sigmas"), extra_options.get("sample_sigmas")
        if sigmas is None or schedule is None or len(schedule) < 2:
            return None
        return self._steps.step(sigmas, schedule), len(schedule) - 1


def chunk_rows(extra_options: dict, rows: int) -> list[tuple[slice, int]] | None:
    """``(rows, COND or UNCOND)`` for each chunk that ComfyUI batched into this call (its
    ``cond_or_uncond`` order), or None for a call made outside sampling."""
    chunks = extra_options.get("cond_or_uncond")
    if not chunks:
        return None
    size = rows // len(chunks)
    return [(slice(i * size, (i + 1) * size), chunk) for i, chunk in enumerate(chunks)]
