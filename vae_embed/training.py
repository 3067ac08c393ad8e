"""Training the embedding VAE: the null-text VAE (the paper's eq. 1, ``α·L_rec + β·KL``) and the
conditional VAE (eq. 4, ``α·L_CLIP + β·KL + γ·L_div``).

``L_rec`` is null-text inversion's pivot loss with a *sampled* null text: from pivot ``x_i`` of a
DDIM inversion, one guided Euler/DDIM step with ``ε_u(x_i, VAE(φ_i, t_i))`` must land on pivot
``x_{i+1}`` (:func:`~..inversion.null_text.pivot_loss`). ``φ_i`` is the null text the
VAE perturbs: the step's optimised embedding of a null-text inversion, or the empty prompt's. A
training example is one (image, step); several images of one class train one VAE. β follows the
cyclical schedule unless fixed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..base.errors import PromptEditError
from ..inversion.ddim import CondEps, UncondEps, euler_step, guided_eps
from ..inversion.null_text import pivot_loss
from .losses import cross_matched_clip_loss, cyclical_beta, diversity_loss
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
            raise PromptEditError("iterations and batch must be at least 1")
        if self.guidance <= 1.0:
            raise PromptEditError(f"guidance {self.guidance} <= 1: the null text only matters with guidance above 1")


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
    conds: dict[tuple[int, int], torch.Tensor] = {}  # ε_c per (image, step): the UNet is frozen

    def iteration_loss(iteration: int) -> torch.Tensor:
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
        reconstruction = pivot_loss(reached.float() - path.pivots[i + 1].float(), sigma_next)
        beta = _kl_weight(settings.kl_weight, settings.kl_cycles, iteration, settings.iterations)
        return settings.reconstruction_weight * reconstruction + beta * kl_divergence(mean, log_variance)

    return _optimise(vae, settings.iterations, settings.learning_rate, iteration_loss, progress, check_interrupt)


def _kl_weight(weight: float, cycles: int, iteration: int, iterations: int) -> float:
    return weight * (cyclical_beta(iteration, iterations, cycles) if cycles else 1.0)


def _optimise(vae: EmbeddingVAE, iterations: int, learning_rate: float, iteration_loss: Callable[[int], torch.Tensor],
              progress: Callable[[int, int, float], None] | None,
              check_interrupt: Callable[[], None] | None) -> list[float]:
    """AdamW on the VAE's parameters over ``iteration_loss(i)``; the loss of every iteration."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate)
    vae.train()
    losses = []
    try:
        for iteration in range(iterations):
            loss = iteration_loss(iteration)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(iteration + 1, iterations, losses[-1])
            if check_interrupt is not None:
                check_interrupt()
    finally:
        vae.eval()
    return losses


@dataclass(frozen=True)
class ConditionalVAESettings:
    iterations: int = 200
    variations: int = 2  # N draws per iteration (the diversity loss pairs them)
    learning_rate: float = 1e-3
    clip_weight: float = 1.0  # α
    kl_weight: float = 1e-4  # β (its maximum when annealed)
    diversity_weight: float = -0.1  # γ < 0: pushes the draws' images apart
    clip_lambda: float = 0.5  # λ of eq. 2
    kl_cycles: int = 4
    guidance: float = 7.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise PromptEditError("iterations must be at least 1")
        if self.variations < 2:
            raise PromptEditError(f"variations {self.variations}: the diversity loss needs at least 2 draws per iteration")
        if self.diversity_weight > 0:
            raise PromptEditError(f"diversity_weight {self.diversity_weight} > 0 would pull the draws together; use γ ≤ 0")
        if not 0.0 <= self.clip_lambda <= 1.0:
            raise PromptEditError(f"clip_lambda {self.clip_lambda} is not in [0, 1]")


@dataclass
class EditTrajectory:
    """Latents ``[x at σ_0, …]`` of one sampling run with the edit prompt ``C'`` (kept, as the paper
    does, so that an iteration needs one UNet step), the model timestep of each σ, the null text of
    each step, and ``E_I(I')``: CLIP image features of that run's final image."""

    latents: Sequence[torch.Tensor]
    sigmas: torch.Tensor
    timesteps: torch.Tensor
    nulls: torch.Tensor
    edit_image_features: torch.Tensor


ImageFeatures = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def train_conditional_vae(
    vae: EmbeddingVAE,
    eps: UncondEps,
    edit: torch.Tensor,
    text_features: Callable[[torch.Tensor], torch.Tensor],
    image_features: ImageFeatures,
    trajectories: Sequence[EditTrajectory],
    settings: ConditionalVAESettings = ConditionalVAESettings(),
    progress: Callable[[int, int, float], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> list[float]:
    """Train ``vae`` on the edit embedding ``edit [1, tokens, dim]`` with eq. 4:
    ``α·L_CLIP + β·KL + γ·L_div``.

    Per iteration, at a random kept latent ``x_t``: ``C'' = VAE(C', t)`` for N draws, one guided UNet
    step predicts ``x0 = x_t − σ·ε̃(x_t, C'')`` (``eps(x, σ, context)`` is the model's ε),
    ``image_features(x0)`` gives CLIP image features and perceptual features of the decoded images,
    ``text_features(embedding)`` CLIP text features of an embedding. L_CLIP is eq. 2 with the kept
    ``E_I(I')``; L_div is eq. 3 on the perceptual features. Returns the loss of every iteration.
    """
    pick = random.Random(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    n = settings.variations
    with torch.no_grad():
        edit_text = text_features(edit).expand(n, -1)

    def iteration_loss(iteration: int) -> torch.Tensor:
        path = trajectories[pick.randrange(len(trajectories))]
        i = pick.randrange(len(path.sigmas) - 1)
        x = path.latents[i].expand(n, *path.latents[i].shape[1:])
        sigma = path.sigmas[i : i + 1]
        device = edit.device
        noise = torch.randn(vae.latent_shape(n), generator=generator).to(device)
        varied, mean, log_variance = vae(edit.float().expand(n, -1, -1), path.timesteps[i : i + 1].to(device), noise)
        with torch.no_grad():
            eps_null = eps(x, sigma, path.nulls[i : i + 1].expand(n, -1, -1))
        predicted = x - sigma.reshape(1, 1, 1, 1) * guided_eps(eps_null, eps(x, sigma, varied), settings.guidance)
        clip_features, perceptual = image_features(predicted)
        clip_loss = cross_matched_clip_loss(clip_features, edit_text, path.edit_image_features.expand(n, -1),
                                            text_features(varied), settings.clip_lambda)
        beta = _kl_weight(settings.kl_weight, settings.kl_cycles, iteration, settings.iterations)
        return (settings.clip_weight * clip_loss + beta * kl_divergence(mean, log_variance)
                + settings.diversity_weight * diversity_loss(perceptual, generator))

    return _optimise(vae, settings.iterations, settings.learning_rate, iteration_loss, progress, check_interrupt)
