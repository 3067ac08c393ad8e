"""DDIM inversion in ComfyUI's k-space (x = x0 + σ·ε).

ComfyUI's ``euler`` / ``ddim`` sampler walks a descending σ schedule with
``x_{i+1} = x_i + (σ_{i+1} − σ_i)·ε(x_i, σ_i)``, which is deterministic DDIM (η = 0). Inversion
walks it backwards, ``x_i = x_{i+1} + (σ_i − σ_{i+1})·ε̂``, with the official DDIM inversion's
approximation of ``ε(x_i, σ_i)`` (``ddim_loop`` / ``next_step`` of null-text inversion, Mokady et
al.; PnP Inversion's code): the network is given the latent it holds now, ``z_{i+1}``, with the
noisier step's timestep ``t(σ_i)``.

A ComfyUI model scales its input by ``c_in(σ)`` (for VP models, eps or v-prediction,
``1/√(σ² + 1)``, which maps the k-space ``x`` to the VP latent ``z = √ᾱ·x``). Evaluating
``ε(x_{i+1}, σ_i)`` as it is would feed the network ``z_{i+1}·√(ᾱ_i/ᾱ_{i+1})``, a latent shrunk
towards 0 (on SD1.5-shaped models 0.28 relative off the official noisy latent at 10 steps, 0.07
at 50). So ``ε̂ = ε(x_{i+1}·c_in(σ_{i+1})/c_in(σ_i), σ_i)``: the network sees ``c_in(σ_{i+1})·x_{i+1}
= z_{i+1}``. Flow models (Flux, SD3) have ``c_in = 1``, where both readings agree.
"""

from __future__ import annotations

from typing import Callable

import torch

# ε of the source prompt: (latent, σ as a 1-element tensor) -> ε
CondEps = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# ε with a given unconditional context: (latent, σ, context) -> ε
UncondEps = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# both in one model call: (latent, σ, context_a, context_b) -> (ε_a, ε_b)
PairedEps = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Progress = Callable[[int, int], None]
# the model's input scaling c_in(σ) (σ a 1-element tensor -> a factor); None: c_in = 1 (flow models)
InputScaling = Callable[[torch.Tensor], torch.Tensor]


def euler_step(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One step of ComfyUI's Euler/DDIM sampler."""
    return x + (sigma_next - sigma) * eps


def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    return eps_uncond + guidance * (eps_cond - eps_uncond)


@torch.no_grad()
def ddim_invert(eps_cond: CondEps, x0: torch.Tensor, sigmas: torch.Tensor, input_scaling: InputScaling | None,
                progress: Progress | None = None, check_interrupt: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """The inversion trajectory ``[x at σ_0, …, x at σ_n]`` ending at ``x0`` (σ_n is usually 0).

    ``trajectory[0]`` is the noisy latent to sample from; ``trajectory[i]`` is the pivot the sampler
    should reach after ``i`` steps. Step ``σ_{i+1} → σ_i`` evaluates
    ``ε(x_{i+1}·c_in(σ_{i+1})/c_in(σ_i), σ_i)`` with ``c_in = input_scaling`` (the model's input
    scaling; None where it is 1), so the network sees the latent it holds now with the noisier
    timestep, as the official ``next_step`` does (module docstring).
    """
    steps = len(sigmas) - 1
    x = x0
    trajectory = [x0]
    for n, i in enumerate(reversed(range(steps))):
        sigma, sigma_now = sigmas[i : i + 1], sigmas[i + 1 : i + 2]
        x_in = x if input_scaling is None else x * (input_scaling(sigma_now) / input_scaling(sigma)).to(x.dtype)
        x = euler_step(x, eps_cond(x_in, sigma), sigma_now, sigma)
        trajectory.append(x)
        if check_interrupt is not None:
            check_interrupt()
        if progress is not None:
            progress(n + 1, steps)
    return trajectory[::-1]


@torch.no_grad()
def guided_trajectory(eps_cond: CondEps, eps_uncond: UncondEps, x: torch.Tensor, sigmas: torch.Tensor,
                      unconds: torch.Tensor, guidance: float) -> list[torch.Tensor]:
    """Euler/DDIM sampling with classifier-free guidance and ``unconds[k]`` at step ``k``: the latent
    at every σ, ``[x at σ_0, …, x at σ_n]``."""
    trajectory = [x]
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i : i + 1]
        eps = eps_cond(x, sigma)
        if guidance != 1.0:
            eps = guided_eps(eps_uncond(x, sigma, unconds[i : i + 1]), eps, guidance)
        x = euler_step(x, eps, sigma, sigmas[i + 1 : i + 2])
        trajectory.append(x)
    return trajectory
