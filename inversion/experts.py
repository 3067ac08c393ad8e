"""Two experts over one σ schedule (Wan 2.2 A14B): which model runs which sampling step. Plain torch.

ComfyUI samples A14B with two KSamplerAdvanced nodes over the same schedule: the high-noise expert
walks steps ``[0, switch)``, the low-noise expert ``[switch, n)``. An inversion made over both must
evaluate, for each step, the expert that will sample it: DDIM inversion walks the schedule
backwards, so it meets the low-noise expert first; null-text optimisation walks it forwards. The ε
functions of the inversion (:mod:`.ddim`, :mod:`.null_text`) all take ``(x, σ, …)`` with σ the
sampling step's own, so one function that looks the step up from σ and calls that step's expert
(:func:`by_step`) serves them all unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..base.errors import PromptEditError
from ..base.sigma_steps import step_at

HIGH_NOISE, LOW_NOISE = 0, 1
EXPERT_NAMES = ("high-noise expert", "low-noise expert")


@dataclass(frozen=True)
class ExpertSteps:
    """``steps`` sampling steps, the high-noise expert on ``[0, switch)`` and the low-noise one on
    ``[switch, steps)``; ``switch`` 0: one model samples every step."""

    steps: int
    switch: int = 0

    def __post_init__(self) -> None:
        problem = switch_problem(self.switch, self.steps)
        if problem:
            raise PromptEditError(f"switch_at_step: {problem}")

    @property
    def experts(self) -> int:
        return 2 if self.switch else 1

    def expert_at(self, step: int) -> int:
        """The expert (:data:`HIGH_NOISE` or :data:`LOW_NOISE`) that samples ``step``."""
        return LOW_NOISE if self.switch and step >= self.switch else HIGH_NOISE

    def steps_of(self, expert: int) -> range:
        """The sampling steps ``expert`` walks (all of them where there is one model)."""
        if not self.switch:
            return range(self.steps)
        return range(self.switch) if expert == HIGH_NOISE else range(self.switch, self.steps)


def switch_problem(switch: int, steps: int) -> str | None:
    """Why ``switch`` cannot split ``steps`` sampling steps between two experts (None: it can; 0
    means no switch). Each expert must sample at least one step."""
    if switch == 0:
        return None
    if not 1 <= switch < steps:
        return (f"{switch} is not a step inside the schedule's {steps} steps; give 1 to {steps - 1} (the high-noise "
                f"sampler's end_at_step), or 0 for one model")
    return None


def by_step(functions: Sequence[Callable[..., object]], sigmas: torch.Tensor, experts: ExpertSteps,
            before: Callable[[int], None] | None = None) -> Callable[..., object]:
    """One function ``f(x, σ, *rest)`` that calls ``functions[expert]`` of the sampling step at σ
    (``sigmas``: the schedule, as the sampler walks it). ``before(expert)`` is called before every
    call (the host makes sure that model is loaded; several of these functions share one host)."""
    if len(functions) != experts.experts:
        raise PromptEditError(f"{len(functions)} functions for {experts.experts} expert(s)")
    if experts.experts == 1 and before is None:
        return functions[0]

    def call(x: torch.Tensor, sigma: torch.Tensor, *rest: object) -> object:
        expert = experts.expert_at(step_at(float(sigma.reshape(-1)[0]), sigmas))
        if before is not None:
            before(expert)
        return functions[expert](x, sigma, *rest)

    return call
