"""Fractions of the sampling schedule: which steps a window such as "the first 80 %" covers.

A window ``[start, end)`` covers the steps ``⌊start·n⌋ … ⌊end·n⌋ − 1`` of ``n``, the way
Prompt-to-Prompt counts its self-attention window. (Its cross-attention table has ``n + 1``
rows, so there the bounds are ``⌊start·(n+1)⌋`` and ``⌊end·(n+1)⌋``; the pack uses one rule for
every window: README, "Where it differs from the official Prompt-to-Prompt code".)
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import P2PInputError


def step_of(fraction: float, num_steps: int) -> int:
    """The step at ``fraction`` of the schedule, floored with slack (0.29 · 100 must give 29)."""
    return int(fraction * num_steps + 1e-6)


@dataclass(frozen=True)
class Window:
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise P2PInputError(f"step window {self.start}-{self.end} must satisfy 0 <= start <= end <= 1")

    def active(self, step: int, num_steps: int) -> bool:
        return step_of(self.start, num_steps) <= step < step_of(self.end, num_steps)
