"""ComfyUI side of an inversion over two experts (Wan 2.2 A14B): Invert Image's ``model_low_noise``
and ``switch_at_step`` checked against ``model``, and the experts' ε functions joined into one per
kind (:func:`.experts.by_step`), each expert loaded for gradients when its steps come.

The experts are loaded one at a time, when the inversion reaches their steps, not both at once:
A14B's experts are 14B parameters each, and ComfyUI may offload one to make room for the other.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..base.errors import PromptEditError
from ..families import family_of
from .comfy_model import load_for_gradients, sampling_sigmas
from .experts import ExpertSteps, by_step, switch_problem


class ExpertInputError(PromptEditError):
    """Invert Image's ``model_low_noise`` / ``switch_at_step`` do not make two experts of one schedule."""


def expert_steps(model, model_low_noise, switch_at_step: int, sigmas: torch.Tensor, scheduler: str,
                 steps: int) -> tuple[tuple[Any, ...], ExpertSteps]:
    """The models (high-noise first) and who samples which step, for ``model`` alone or with
    ``model_low_noise`` from ``switch_at_step`` on; refuses, naming the input, what does not fit."""
    n = len(sigmas) - 1
    if model_low_noise is None:
        if switch_at_step:
            raise ExpertInputError(
                f"switch_at_step: {switch_at_step} hands the steps from {switch_at_step} on to model_low_noise, which "
                "is not connected; connect the low-noise expert (Wan 2.2 A14B), or set switch_at_step to 0 to invert "
                "with model alone")
        return (model,), ExpertSteps(n)
    if not switch_at_step:
        raise ExpertInputError(
            "switch_at_step: it is 0 (one model over every step) but model_low_noise is connected; set it to the "
            "step where the low-noise expert takes over (the high-noise KSamplerAdvanced's end_at_step, the "
            "low-noise one's start_at_step), or disconnect model_low_noise")
    problem = switch_problem(switch_at_step, n)
    if problem:
        raise ExpertInputError(f"switch_at_step: {problem} (scheduler '{scheduler}', {steps} steps)")
    high, low = family_of(model), family_of(model_low_noise)
    if high.id != low.id:
        raise ExpertInputError(f"model_low_noise: it is {low.name}, model {high.name}; connect the two experts of "
                               "one model (e.g. Wan 2.2 A14B's high-noise and low-noise files)")
    channels = [getattr(m.model.latent_format, "latent_channels", None) for m in (model, model_low_noise)]
    if channels[0] != channels[1]:
        raise ExpertInputError(f"model_low_noise: its latent has {channels[1]} channels, model's {channels[0]}; "
                               "connect the two experts of one model")
    if not torch.allclose(sampling_sigmas(model_low_noise, scheduler, steps), sigmas, rtol=1e-5, atol=1e-6):
        raise ExpertInputError(
            f"model_low_noise: its σ schedule for scheduler '{scheduler}' and {steps} steps differs from model's (a "
            "different shift, e.g. ModelSamplingSD3, on one of them); give both experts the same sampling settings, "
            "as the two samplers must walk one schedule")
    return (model, model_low_noise), ExpertSteps(n, switch_at_step)


class ExpertLoader:
    """Loads an expert for gradients when its steps come (a no-op while it is the one loaded)."""

    def __init__(self, models: Sequence[Any], loaded: int | None = None):
        self.models, self.loaded = tuple(models), loaded

    def __call__(self, expert: int) -> None:
        if expert != self.loaded:
            load_for_gradients(self.models[expert])
            self.loaded = expert


def joined(make: Callable[[Any], Callable | None], models: Sequence[Any], sigmas: torch.Tensor,
           experts: ExpertSteps, loader: ExpertLoader) -> Callable | None:
    """``make(model)`` (an ε function of one model) for each expert, joined into one that calls the
    expert of each step; None where ``make`` gives None for any of them."""
    functions = [make(m) for m in models]
    if any(f is None for f in functions):
        return None
    return by_step(functions, sigmas, experts, loader if experts.experts > 1 else None)
