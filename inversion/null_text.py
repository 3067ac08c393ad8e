"""Null-text inversion (Mokady et al.): per-step unconditional embeddings that make guided DDIM
sampling land on the DDIM-inversion pivots.

For each step ``i`` (noisy → clean), starting from the previous step's result, Adam optimises the
unconditional context so that one guided Euler/DDIM step from the current latent reaches pivot
``i + 1``. The loss is measured in the variance-preserving latent space of the original recipe
(``x_vp = x_k / √(1 + σ²)``) so that its early-stop threshold ``ε + i·2e-5`` means the same.
The embedding is optimised in fp32 whatever dtype the model runs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .ddim import CondEps, Progress, UncondEps, euler_step, guided_eps


@dataclass(frozen=True)
class NullTextSettings:
    guidance: float = 7.5
    inner_steps: int = 10
    epsilon: float = 1e-5
    learning_rate: float = 1e-2
    # "null": start from the empty prompt's embedding (the original recipe); "source": start from the
    # source prompt's embedding, whose guided step already equals the cfg-1 step the inversion took
    init: str = "null"
    # stop before an Adam step when the loss already meets the threshold (the original checks after)
    check_before_step: bool = False

    def __post_init__(self) -> None:
        if self.guidance <= 1.0:
            raise ValueError(
                f"guidance {self.guidance} <= 1: null-text optimisation needs classifier-free guidance "
                "above 1 (use the guidance you will edit with, e.g. 7.5)"
            )
        if self.init not in ("null", "source"):
            raise ValueError(f"init {self.init!r} is not 'null' or 'source'")


@dataclass
class NullTextResult:
    unconds: torch.Tensor  # [steps, tokens, dim] fp32, one context per step
    inner_steps: list[int] = field(default_factory=list)  # Adam steps taken at each step
    losses: list[float] = field(default_factory=list)  # last loss at each step


def _vp_mse(x: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(x.float(), target.float()) / (1.0 + float(sigma) ** 2)


def null_text_invert(
    eps_cond: CondEps,
    eps_uncond: UncondEps,
    pivots: list[torch.Tensor],
    sigmas: torch.Tensor,
    cond: torch.Tensor,
    null: torch.Tensor,
    settings: NullTextSettings = NullTextSettings(),
    progress: Progress | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> NullTextResult:
    """Optimise one unconditional context per step; ``pivots`` from :func:`~.ddim.ddim_invert`,
    ``cond`` the source prompt's context (a starting point for ``init="source"``)."""
    steps = len(sigmas) - 1
    uncond = (cond if settings.init == "source" else null).detach().float().clone()
    unconds: list[torch.Tensor] = []
    result = NullTextResult(torch.empty(0))
    x = pivots[0]
    for i in range(steps):
        sigma, sigma_next = sigmas[i : i + 1], sigmas[i + 1 : i + 2]
        with torch.no_grad():
            eps_c = eps_cond(x, sigma)
        uncond = uncond.detach().requires_grad_(True)
        optimizer = torch.optim.Adam([uncond], lr=settings.learning_rate * (1.0 - i / 100.0))
        threshold = settings.epsilon + i * 2e-5
        taken, loss_value = 0, float("nan")
        for _ in range(settings.inner_steps):
            eps = guided_eps(eps_uncond(x, sigma, uncond), eps_c, settings.guidance)
            loss = _vp_mse(euler_step(x, eps, sigma, sigma_next), pivots[i + 1], sigma_next)
            loss_value = float(loss.detach())
            if settings.check_before_step and loss_value < threshold:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            taken += 1
            if check_interrupt is not None:
                check_interrupt()
            if progress is not None:
                progress(i * settings.inner_steps + taken, steps * settings.inner_steps)
            if loss_value < threshold:
                break
        uncond = uncond.detach()
        unconds.append(uncond[0].clone())
        result.inner_steps.append(taken)
        result.losses.append(loss_value)
        with torch.no_grad():
            x = euler_step(x, guided_eps(eps_uncond(x, sigma, uncond), eps_c, settings.guidance), sigma, sigma_next)
        if progress is not None:
            progress((i + 1) * settings.inner_steps, steps * settings.inner_steps)
    result.unconds = torch.stack(unconds)
    return result
