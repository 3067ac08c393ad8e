"""Local blend: keep everything outside the edited words' regions from the source image.

Prompt-to-Prompt blends the latents after each step, ``x_e ← x_s + m·(x_e − x_s)``, with ``m`` the
union of the source words' and the edited words' thresholded attention masks. A ComfyUI model
patch cannot touch the sampler's latent, only the denoised prediction ``D`` it returns, so the
blend is written on ``D``: for the Euler/DDIM step ``x' = x + (x − D)(σ' − σ)/σ``,

    D_e ← D_s + m·(D_e − D_s) + (1 − m)·σ'/(σ − σ')·(x_s − x_e)

gives exactly the blended latent after the step (the last term snaps the outside region back to
the source where an earlier step left it). Other samplers get the same blend of ``D``, which is
what the method allows for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base.sigma_steps import sigma_after
from .edit_spec import LocalBlend
from .map_store import AttentionMapStore
from .step_window import step_of


def blend_mask(maps: torch.Tensor, selectors: torch.Tensor, latent_hw: tuple[int, int], threshold: float) -> torch.Tensor:
    """``[E, 1, h, w]`` 0/1 mask per edited item from summed maps ``[B, H, W, N]``; for a video's
    maps ``[B, F, H, W, N]`` one mask per frame, ``[E, 1, F, h, w]`` (as its latent ``[B, C, F, h, w]``).

    As Prompt-to-Prompt: words' maps summed, 3×3 max-pool, resized to the latent, normalised by
    their maximum, thresholded; each edit's mask is united with the source's. A video's frames are
    masked one by one (each normalised by its own maximum), so that every frame keeps its own region.
    """
    if maps.ndim == 5:
        batch, frames = maps.shape[:2]
        masks = _word_masks(maps.flatten(0, 1), selectors.repeat_interleave(frames, 0), latent_hw, threshold)
        masks = masks.unflatten(0, (batch, frames))  # [B, F, 1, h, w]
        return (masks[:1] | masks[1:]).float().transpose(1, 2)
    masks = _word_masks(maps, selectors, latent_hw, threshold)
    return (masks[:1] | masks[1:]).float()


def _word_masks(maps: torch.Tensor, selectors: torch.Tensor, latent_hw: tuple[int, int], threshold: float) -> torch.Tensor:
    """``[B, 1, h, w]`` boolean mask of each item's words from its maps ``[B, H, W, N]``."""
    selected = (maps * selectors[:, None, None, :].to(maps)).sum(-1).unsqueeze(1)
    selected = F.max_pool2d(selected, 3, stride=1, padding=1)
    selected = F.interpolate(selected, size=latent_hw)
    peak = selected.amax(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(selected.dtype).tiny)
    return (selected / peak) > threshold


def blend_denoised(
    x: torch.Tensor, denoised: torch.Tensor, mask: torch.Tensor, sigma: float, sigma_next: float
) -> torch.Tensor:
    """Blend the edited items' denoised predictions towards the source (item 0) outside ``mask``."""
    m = mask.to(denoised)
    d_src, x_src = denoised[:1], x[:1]
    d_edit = d_src + m * (denoised[1:] - d_src)
    if sigma - sigma_next > 0 and sigma_next > 0:
        d_edit = d_edit + (1 - m) * (sigma_next / (sigma - sigma_next)) * (x_src - x[1:])
    return torch.cat([denoised[:1], d_edit])


def blend_from_store(blend: LocalBlend | None, store: AttentionMapStore, selectors: torch.Tensor | None,
                     x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, schedule: torch.Tensor | None,
                     position: tuple[int, int] | None) -> torch.Tensor:
    """The post-CFG local blend at sampling step ``position`` (``(step, number of steps)``) from the
    maps recorded so far (``selectors`` ``[B, N]`` over the context's columns); the denoised batch
    as it is without a blend, outside sampling and before ``blend.start``."""
    if blend is None or position is None or store.empty or position[0] < step_of(blend.start, position[1]):
        return denoised
    s = float(sigma.reshape(-1)[0])
    s_next = sigma_after(s, schedule)
    maps = store.running.unflatten(1, store.spatial)
    if store.columns is not None:
        selectors = selectors[:, list(store.columns)]
    mask = blend_mask(maps, selectors.to(maps.device), tuple(denoised.shape[-2:]), blend.threshold)
    return blend_denoised(x, denoised, mask.to(denoised.device), s, s_next)
