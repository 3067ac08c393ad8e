"""Keep everything outside a mask exactly as the inverted photo (plain torch).

A direct inversion stores the pivots ``z_0 … z_n``: the latent the sampler holds after each step
on its way back to the photo (``z_n`` is the photo's latent). At every step the edited items'
denoised prediction is blended with the one that lands them exactly on the next pivot
(:func:`.direct.landing_prediction`), by a mask ``m`` (1 = the region to edit):

    D_i ← m·D_i + (1 − m)·D*_i

The Euler step is linear in D, so where ``m = 0`` every item lands on ``z_{k+1}`` whatever it held
before: the final latent equals the photo's there, bit for bit up to float roundoff, at any cfg,
with any instruction, reference image or attention edit; inside, the edit goes its own way.

The mask comes from a MASK in pixels (the mask editor, another node), or from where the edit's
prediction departs from the source's in the first steps (as DiffEdit does), thresholded. Dilation
widens it; feathering softens its edge outwards over a fixed distance, so what lies beyond the
feather is still exactly zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .direct import landing_prediction


def _as_maps(mask: torch.Tensor) -> torch.Tensor:
    """``[N, 1, h, w]`` from a mask ``[h, w]``, ``[N, h, w]`` or ``[N, 1, h, w]``."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    return mask.float()


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """``mask`` ``[N, 1, h, w]`` grown by ``pixels`` in every direction (a square max filter)."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask, 2 * pixels + 1, stride=1, padding=pixels)


def feather(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """``mask`` with its edge softened outwards over ``pixels``: a cell ``d`` cells away from it
    (``d ≤ pixels``, square distance) gets ``1 − d / (pixels + 1)`` of it, a cell farther away exactly 0."""
    out = mask
    for distance in range(1, pixels + 1):
        out = torch.maximum(out, dilate(mask, distance) * (1 - distance / (pixels + 1)))
    return out


def latent_mask(mask: torch.Tensor, latent_hw: tuple[int, int], dilation: int = 0, feathering: int = 0) -> torch.Tensor:
    """A pixel mask (MASK ``[N, H, W]``, 1 = edit) on the latent's grid ``[N, 1, h, w]``: a latent
    cell is edited if any of its pixels is (a max over the cell), then dilated and feathered."""
    maps = F.adaptive_max_pool2d(_as_maps(mask).clamp(0, 1), latent_hw)
    return feather(dilate(maps, dilation), feathering)


def difference_mask(difference: torch.Tensor, threshold: float, dilation: int = 0, feathering: int = 0) -> torch.Tensor:
    """The mask ``[N, 1, h, w]`` of where ``difference`` (``[N, 1, h, w]``, ≥ 0) reaches
    ``threshold`` of its own maximum, dilated and feathered; all zero where nothing differs."""
    peak = difference.flatten(1).amax(1).view(-1, 1, 1, 1)
    maps = ((difference >= threshold * peak) & (peak > 0)).float()
    return feather(dilate(maps, dilation), feathering)


def spatial_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a − b|`` averaged over channels (and frames, for 5-D latents): ``[N, 1, h, w]``."""
    difference = (a.float() - b.float()).abs()
    return difference.flatten(1, -3).mean(1, keepdim=True)


def _on_latent(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``mask`` ``[N, 1, h, w]`` shaped to broadcast over ``like`` (``[N, C, h, w]`` or ``[N, C, F, h, w]``)."""
    if like.ndim == 5:
        mask = mask.unsqueeze(2)
    return mask.to(like.device, like.dtype)


def kept_outside(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, pivot_next: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """``denoised`` (item 0 = the source) with the edited items' predictions blended, by ``mask``
    (``[1 or edits, 1, h, w]``), with the ones that land them on ``pivot_next``."""
    landing = landing_prediction(x[1:], sigma, sigma_next, pivot_next)
    m = _on_latent(mask, x)
    out = denoised.clone()
    out[1:] = m * denoised[1:] + (1 - m) * landing
    return out
