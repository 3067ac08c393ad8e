"""Null-text inversion (Mokady et al.): per-step unconditional embeddings that make guided DDIM
sampling land on the DDIM-inversion pivots.

For each step ``i`` (noisy → clean), starting from the previous step's result, the unconditional
context is optimised so that one guided Euler/DDIM step from the current latent reaches pivot
``i + 1``. The loss is measured in the variance-preserving latent space of the original recipe
(``x_vp = x_k / √(1 + σ²)``) so that its early-stop threshold ``ε + i·2e-5`` means the same.
The embedding is optimised in fp32 whatever dtype the model runs in.

Two optimisers:

* ``"adam"``: the original recipe, Adam with lr ``1e-2·(1 − i/100)``, a fresh forward after the
  last update to advance the latent.
* ``"secant"``: steepest descent with a line search that costs one forward. The guided step is
  linear in the unconditional ε, so after a probe ``c + d`` the loss along ``c + α·d`` is, to first
  order, a quadratic in ``α`` whose minimum is known in closed form, and ε at the chosen point is
  interpolated (no forward to advance the latent). One iteration costs a forward, a backward and a
  probe forward, against Adam's forward + backward, and removes far more of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..base.errors import PromptEditError
from .ddim import CondEps, PairedEps, Progress, UncondEps, euler_step, guided_eps

MAX_LINE_STEP = 10.0  # the secant line search never goes further than 10 probe lengths


def pivot_loss(miss: torch.Tensor, sigma_next: torch.Tensor | float) -> torch.Tensor:
    """How far a guided step landed from its pivot: the mean square of ``miss`` (reached − pivot,
    at ``sigma_next``) in the variance-preserving latent space of the original recipe
    (``x_vp = x / √(1 + σ²)``), so that the early-stop threshold ``ε + i·2e-5`` means the same.
    The embedding VAE's reconstruction loss is this loss with a sampled null text."""
    return miss.float().pow(2).mean() / (1.0 + float(sigma_next) ** 2)


@dataclass(frozen=True)
class NullTextSettings:
    guidance: float = 7.5
    inner_steps: int = 10
    epsilon: float = 1e-5
    learning_rate: float = 1e-2  # Adam's lr; for "secant", the probe's rms size per coordinate
    # "null": start from the empty prompt's embedding (the original recipe); "source": start from the
    # source prompt's embedding, whose guided step already equals the cfg-1 step the inversion took
    init: str = "null"
    # stop before an update when the loss already meets the threshold (the original checks after)
    check_before_step: bool = False
    optimizer: str = "adam"  # or "secant"
    # > 0: steps 1, 1 + n, 1 + 2n, … (never the last, whose miss is the reconstruction's) take no
    # update and keep the previous step's context (0: every step is optimised). The context carried
    # over already removes most of such a step's miss: with n = 3 the fast recipe reconstructs as
    # well as with every step optimised (bench/inversion.py)
    rest_every: int = 0

    def __post_init__(self) -> None:
        if self.guidance <= 1.0:
            raise PromptEditError(
                f"guidance {self.guidance} <= 1: null-text optimisation needs classifier-free guidance "
                "above 1 (use the guidance you will edit with, e.g. 7.5)"
            )
        if self.init not in ("null", "source"):
            raise PromptEditError(f"init {self.init!r} is not 'null' or 'source'")
        if self.optimizer not in ("adam", "secant"):
            raise PromptEditError(f"optimizer {self.optimizer!r} is not 'adam' or 'secant'")
        if self.rest_every < 0:
            raise PromptEditError(f"rest_every {self.rest_every} < 0: give 0 (optimise every step) or more")

    def threshold(self, step: int) -> float:
        return self.epsilon + step * 2e-5

    def rests(self, step: int, steps: int) -> bool:
        """Whether ``step`` (of ``steps``) keeps the previous step's context without an update."""
        return self.rest_every > 0 and step % self.rest_every == 1 and step < steps - 1


@dataclass
class NullTextResult:
    unconds: torch.Tensor  # [steps, tokens, dim] fp32, one context per step
    inner_steps: list[int] = field(default_factory=list)  # updates taken at each step
    losses: list[float] = field(default_factory=list)  # last measured loss at each step


@dataclass
class _Step:
    """One sampling step's fixed data: the latent, σ's, the conditional ε and the pivot to reach."""

    x: torch.Tensor
    sigma: torch.Tensor
    sigma_next: torch.Tensor
    eps_c: torch.Tensor | None  # None until the first paired forward sets it
    pivot: torch.Tensor
    guidance: float

    def residual(self, eps_u: torch.Tensor) -> torch.Tensor:
        return euler_step(self.x, guided_eps(eps_u, self.eps_c, self.guidance), self.sigma, self.sigma_next) - self.pivot

    def loss(self, residual: torch.Tensor) -> torch.Tensor:
        return pivot_loss(residual, self.sigma_next)

    def advance(self, eps_u: torch.Tensor) -> torch.Tensor:
        return euler_step(self.x, guided_eps(eps_u, self.eps_c, self.guidance), self.sigma, self.sigma_next)


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
    eps_pair: PairedEps | None = None,
) -> NullTextResult:
    """Optimise one unconditional context per step; ``pivots`` from :func:`~.ddim.ddim_invert`,
    ``cond`` the source prompt's context (a starting point for ``init="source"``). With
    ``eps_pair`` (ε of ``cond`` and of a context in one model call), the secant optimiser gets each
    step's conditional ε from its first forward instead of a call of its own.

    ``progress(done, total)`` counts inner steps (``total = steps · inner_steps``; a step that stops
    early jumps ahead); ``check_interrupt`` is called after every update and may raise."""
    steps = len(sigmas) - 1
    total = steps * settings.inner_steps
    optimise = _adam if settings.optimizer == "adam" else _secant
    uncond = (cond if settings.init == "source" else null).detach().float().clone()
    unconds: list[torch.Tensor] = []
    result = NullTextResult(torch.empty(0))
    x = pivots[0]
    for i in range(steps):
        sigma, sigma_next = sigmas[i : i + 1], sigmas[i + 1 : i + 2]
        if settings.rests(i, steps):
            x, loss = _rest(eps_cond, eps_uncond, eps_pair, _Step(x, sigma, sigma_next, None, pivots[i + 1],
                                                                   settings.guidance), cond, uncond)
            unconds.append(uncond[0].clone())
            result.inner_steps.append(0)
            result.losses.append(loss)
            if progress is not None:
                progress((i + 1) * settings.inner_steps, total)
            continue
        first_forward = None
        if eps_pair is not None and settings.optimizer == "secant":
            step = _Step(x, sigma, sigma_next, None, pivots[i + 1], settings.guidance)

            def first_forward(context: torch.Tensor, step: _Step = step) -> torch.Tensor:
                eps_c, eps_u = eps_pair(step.x, step.sigma, cond, context)
                step.eps_c = eps_c.detach()
                return eps_u
        else:
            with torch.no_grad():
                step = _Step(x, sigma, sigma_next, eps_cond(x, sigma), pivots[i + 1], settings.guidance)

        def tick(taken: int, i: int = i) -> None:
            if check_interrupt is not None:
                check_interrupt()
            if progress is not None:
                progress(i * settings.inner_steps + taken, total)

        uncond, x, taken, loss = optimise(eps_uncond, step, uncond, settings, i, tick, first_forward)
        unconds.append(uncond[0].clone())
        result.inner_steps.append(taken)
        result.losses.append(loss)
        if progress is not None:
            progress((i + 1) * settings.inner_steps, total)
    result.unconds = torch.stack(unconds)
    return result


@torch.no_grad()
def _rest(eps_cond: CondEps, eps_uncond: UncondEps, eps_pair: PairedEps | None, step: _Step, cond: torch.Tensor,
          uncond: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A step without an update: the guided step with ``uncond`` as it is (one model call where
    ``eps_pair`` is given). Returns (next latent, its loss)."""
    if eps_pair is not None:
        step.eps_c, eps_u = eps_pair(step.x, step.sigma, cond, uncond)
    else:
        step.eps_c, eps_u = eps_cond(step.x, step.sigma), eps_uncond(step.x, step.sigma, uncond)
    return step.advance(eps_u), float(step.loss(step.residual(eps_u)))


def _adam(eps_uncond: UncondEps, step: _Step, uncond: torch.Tensor, settings: NullTextSettings, index: int,
          tick: Callable[[int], None], first_forward: None = None) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """The original recipe's inner loop. Returns (uncond, next latent, updates, last loss)."""
    threshold = settings.threshold(index)
    uncond = uncond.detach().requires_grad_(True)
    optimizer = torch.optim.Adam([uncond], lr=settings.learning_rate * (1.0 - index / 100.0))
    taken, loss_value = 0, float("nan")
    for _ in range(settings.inner_steps):
        loss = step.loss(step.residual(eps_uncond(step.x, step.sigma, uncond)))
        loss_value = float(loss.detach())
        if settings.check_before_step and loss_value < threshold:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        taken += 1
        tick(taken)
        if loss_value < threshold:
            break
    uncond = uncond.detach()
    with torch.no_grad():
        x = step.advance(eps_uncond(step.x, step.sigma, uncond))
    return uncond, x, taken, loss_value


def _secant(eps_uncond: UncondEps, step: _Step, uncond: torch.Tensor, settings: NullTextSettings, index: int,
            tick: Callable[[int], None], first_forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Steepest descent with a one-probe line search (see the module docstring). Always checks the
    loss before an update. ``first_forward(context)``, if given, is the first ε_u (and sets the
    step's conditional ε). Returns (uncond, next latent, updates, last loss)."""
    threshold = settings.threshold(index)
    taken, loss_value, eps_u = 0, float("nan"), None
    for iteration in range(settings.inner_steps):
        context = uncond.detach().requires_grad_(True)
        if iteration == 0 and first_forward is not None:
            eps_at_context = first_forward(context)
        else:
            eps_at_context = eps_uncond(step.x, step.sigma, context)
        residual = step.residual(eps_at_context)
        loss = step.loss(residual)
        loss_value, eps_u = float(loss.detach()), eps_at_context.detach()
        if loss_value < threshold:
            break
        (grad,) = torch.autograd.grad(loss, context)
        with torch.no_grad():
            probe = -settings.learning_rate * grad / grad.pow(2).mean().sqrt().clamp_min(1e-30)
            eps_change = eps_uncond(step.x, step.sigma, uncond + probe) - eps_u
            # the residual moves by d(residual)/d(eps_u) · eps_change along the probe
            residual_change = (step.sigma_next - step.sigma) * (1.0 - step.guidance) * eps_change.float()
            alpha = -(residual.detach().float() * residual_change).sum() / residual_change.pow(2).sum().clamp_min(1e-30)
            alpha = float(alpha.clamp(0.0, MAX_LINE_STEP))
            uncond = (uncond + alpha * probe).detach()
            eps_u = eps_u + alpha * eps_change
        taken += 1
        tick(taken)
    with torch.no_grad():
        x = step.advance(eps_u)
    return uncond, x, taken, loss_value
