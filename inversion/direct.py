"""Direct Inversion (Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of
Code", ICLR 2024), for ComfyUI's Euler/DDIM sampler in k-space. Plain torch.

DDIM inversion gives the pivots ``z_0 … z_n`` (the latent the sampler should hold after each
step). While sampling, after the guided prediction of step ``k``, the source item's denoised
prediction is replaced by the one whose Euler step lands exactly on ``z_{k+1}``:

    x_{k+1} = x_k + (σ_{k+1} − σ_k)·(x_k − D)/σ_k = z_{k+1}
    ⇔  D* = x_k − (z_{k+1} − x_k)·σ_k / (σ_{k+1} − σ_k)        (D* = z_n at the last step, σ = 0)

It is computed from the actual step (no stored offsets), so the source branch is exact at any
guidance scale, and the edited branches inherit a faithful source through the injected
attention. The paper leaves the edited branches alone; ``correct_edits`` adds them the source's
correction ``D* − D`` as well.
"""

from __future__ import annotations

import torch


def landing_prediction(x: torch.Tensor, sigma: float, sigma_next: float, pivot_next: torch.Tensor) -> torch.Tensor:
    """The denoised prediction D* with which the Euler step from ``x`` at ``sigma`` reaches
    ``pivot_next`` at ``sigma_next``."""
    if sigma_next == 0:
        return pivot_next.to(x.dtype)
    return x - (pivot_next.to(x.dtype) - x) * (sigma / (sigma_next - sigma))


def corrected_denoised(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float,
                       pivot_next: torch.Tensor, correct_edits: bool = False) -> torch.Tensor:
    """``denoised`` (a batch, item 0 = the source) with item 0 replaced by D*; with
    ``correct_edits``, the other items shifted by the same correction."""
    target = landing_prediction(x[:1], sigma, sigma_next, pivot_next)
    out = denoised.clone()
    if correct_edits and len(out) > 1:
        out[1:] += target - denoised[:1]
    out[:1] = target
    return out
