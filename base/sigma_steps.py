"""Which sampling step a σ belongs to, the one lookup of the pack (plain torch).

A model call knows its step only by the σ it carries; P2P's windows, local blend's next σ and
Apply Inversion's per-step contexts and pivots all look it up here, in the sampler's σ list (or an
inversion's), which is descending and ends with the last σ (0 for most schedulers).
"""

from __future__ import annotations

import torch

SLACK = 1e-4  # relative: a σ that has been through a dtype or device change still finds its step


def step_at(sigma: float, schedule: torch.Tensor) -> int:
    """The index of the sampling step at ``sigma`` in ``schedule``: how many listed σ lie above it,
    capped at the last step (a σ off the list counts as the step after the last σ above it)."""
    above = int((schedule.detach().float().cpu() > sigma * (1 + SLACK)).sum())
    return min(above, len(schedule) - 2)


def sigma_after(sigma: float, schedule: torch.Tensor) -> float:
    """The largest σ of ``schedule`` below ``sigma`` (0 where there is none): where the step that
    starts at ``sigma`` lands."""
    listed = schedule.detach().float().cpu()
    lower = listed[listed < sigma * (1 - SLACK)]
    return float(lower.max()) if len(lower) else 0.0


class StepCache:
    """:func:`step_at` worked out once per step: every model call of one step carries the same σ
    tensor. Safe to share between threads (MultiGPU CFG Split runs the chunks of one step in
    threads at once): the cache is read once per call and replaced whole."""

    def __init__(self) -> None:
        self._last: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def reset(self) -> None:
        self._last = None

    def step(self, sigmas: torch.Tensor, schedule: torch.Tensor) -> int:
        """The step of the call whose σ tensor is ``sigmas`` (its first entry) along ``schedule``."""
        last = self._last
        if last is None or last[0] is not sigmas or last[1] is not schedule:
            last = self._last = (sigmas, schedule, step_at(float(sigmas.reshape(-1)[0]), schedule))
        return last[2]
