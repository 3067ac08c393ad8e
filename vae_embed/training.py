"""Training the null-text embedding VAE (the paper's eq. 1): ``α·L_rec + β·KL``.

``L_rec`` is null-text inversion's pivot loss with a *sampled* null text: from pivot ``x_i`` of a
DDIM inversion, one guided Euler/DDIM step with ``ε_u(x_i, VAE(φ_i, t_i))`` must land on pivot
``x_{i+1}`` (variance-preserving MSE, as in inversion/null_text.py). ``φ_i`` is the null text the
VAE perturbs: the step's optimised embedding of a null-text inversion, or the empty prompt's. A
training example is one (image, step); several images of one class train one VAE. β follows the
cyclical schedule unless fixed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..inversion.ddim import CondEps, UncondEps, euler_step, guided_eps
from .losses import cyclical_beta
from .model import EmbeddingVAE, kl_divergence


@dataclass(frozen=True)
class NullTextVAESettings:
    iterations: int = 200
    batch: int = 2  # VAE draws per iteration (all at one image and step)
    learning_rate: float = 1e-3
    reconstruction_weight: float = 1.0  # α
    kl_weight: float = 1e-4  # β (its maximum when annealed)
    kl_cycles: int = 4  # cyclical annealing cycles; 0: constant β
    guidance: float = 7.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch < 1:
            raise ValueError("iterations and batch must be at least 1")
        if self.guidance <= 1.0:
            raise ValueError(f"guidance {self.guidance} <= 1: the null text only matters with guidance above 1")


@dataclass
class Trajectory:
    """One image's DDIM inversion: ``pivots[i]`` at ``sigmas[i]`` (noisy → clean), the model timestep
    of every σ, the null text of every step ``[steps, tokens, dim]``, and its conditional ε."""

    pivots: Sequence[torch.Tensor]
    sigmas: torch.Tensor
    timesteps: torch.Tensor
    nulls: torch.Tensor
    eps_cond: CondEps


def train_null_text_vae(
    vae: EmbeddingVAE,
    eps_uncond: UncondEps,
    trajectories: Sequence[Trajectory],
    settings: NullTextVAESettings = NullTextVAESettings(),
    progress: Callable[[int, int, float], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> list[float]:
    """Train ``vae`` in place; returns the total loss of every iteration. ``progress(done, total,
    loss)`` after each; ``check_interrupt`` may raise to stop (the VAE keeps what it learnt)."""
    pick = random.Random(settings.seed)
    noise_generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.learning_rate)
    conds: dict[tuple[int, int], torch.Tensor] = {}  # ε_c per (image, step): the UNet is frozen
    vae.train()
    losses = []
    for iteration in range(settings.iterations):
        image = pick.randrange(len(trajectories))
        path = trajectories[image]
        i = pick.randrange(len(path.sigmas) - 1)
        x, sigma, sigma_next = path.pivots[i], path.sigmas[i : i + 1], path.sigmas[i + 1 : i + 2]
        if (image, i) not in conds:
            with torch.no_grad():
                conds[(image, i)] = path.eps_cond(x, sigma)
        device = path.nulls.device
        null = path.nulls[i : i + 1].float().expand(settings.batch, -1, -1)
        noise = torch.randn(vae.latent_shape(settings.batch), generator=noise_generator).to(device)
        sampled, mean, log_variance = vae(null, path.timesteps[i : i + 1].to(device), noise)
        batch_x = x.expand(settings.batch, *x.shape[1:])
        eps = guided_eps(eps_uncond(batch_x, sigma, sampled), conds[(image, i)].expand_as(batch_x), settings.guidance)
        reached = euler_step(batch_x, eps, sigma, sigma_next)
        reconstruction = (reached.float() - path.pivots[i + 1].float()).pow(2).mean() / (1.0 + float(sigma_next) ** 2)
        beta = settings.kl_weight * (cyclical_beta(iteration, settings.iterations, settings.kl_cycles)
                                     if settings.kl_cycles else 1.0)
        loss = settings.reconstruction_weight * reconstruction + beta * kl_divergence(mean, log_variance)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(iteration + 1, settings.iterations, losses[-1])
        if check_interrupt is not None:
            check_interrupt()
    vae.eval()
    return losses
