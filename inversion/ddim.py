"""DDIM inversion in ComfyUI's k-space (x = x0 + σ·ε).

ComfyUI's ``euler`` / ``ddim`` sampler walks a descending σ schedule with
``x_{i+1} = x_i + (σ_{i+1} − σ_i)·ε(x_i, σ_i)``, which is deterministic DDIM (η = 0). Inversion
walks it backwards with the usual DDIM approximation ``ε(x_i, σ_i) ≈ ε(x_{i+1}, σ_i)``:
``x_i = x_{i+1} + (σ_i − σ_{i+1})·ε(x_{i+1}, σ_i)`` — the model is evaluated at the noisier σ,
as null-text inversion's ``next_step`` does.
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


def euler_step(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One step of ComfyUI's Euler/DDIM sampler."""
    return x + (sigma_next - sigma) * eps


def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    return eps_uncond + guidance * (eps_cond - eps_uncond)


@torch.no_grad()
def ddim_invert(eps_cond: CondEps, x0: torch.Tensor, sigmas: torch.Tensor,
                progress: Progress | None = None, check_interrupt: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """The inversion trajectory ``[x at σ_0, …, x at σ_n]`` ending at ``x0`` (σ_n is usually 0).

    ``trajectory[0]`` is the noisy latent to sample from; ``trajectory[i]`` is the pivot the sampler
    should reach after ``i`` steps.
    """
    steps = len(sigmas) - 1
    x = x0
    trajectory = [x0]
    for n, i in enumerate(reversed(range(steps))):
        x = euler_step(x, eps_cond(x, sigmas[i : i + 1]), sigmas[i + 1], sigmas[i])
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
