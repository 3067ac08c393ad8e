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

import math

import torch
import torch.nn.functional as F

from ..base.sigma_steps import sigma_after
from .edit_spec import LocalBlend
from .map_store import AttentionMapStore
from .step_window import step_of


def blend_mask(maps: torch.Tensor, selectors: torch.Tensor, latent_hw: tuple[int, int], threshold: float,
               temporal_sigma: float = 0.0) -> torch.Tensor:
    """``[E, 1, h, w]`` 0/1 mask per edited item from summed maps ``[B, H, W, N]``; for a video's
    maps ``[B, F, H, W, N]`` one mask per frame, ``[E, 1, F, h, w]`` (as its latent ``[B, C, F, h, w]``).

    As Prompt-to-Prompt: words' maps summed, 3×3 max-pool, resized to the latent, normalised by
    their maximum, thresholded; each edit's mask is united with the source's. A video's frames are
    masked one by one (each normalised by its own maximum), so that every frame keeps its own region;
    with ``temporal_sigma`` > 0 (in frames) each frame's normalised map is first smoothed along time
    (:func:`smooth_over_frames`). An image's maps, and a one-frame video's, are never smoothed.
    """
    if maps.ndim == 5:
        batch, frames = maps.shape[:2]
        strength = _word_strength(maps.flatten(0, 1), selectors.repeat_interleave(frames, 0), latent_hw)
        strength = strength.unflatten(0, (batch, frames))  # [B, F, 1, h, w]
        if temporal_sigma > 0:
            strength = smooth_over_frames(strength, temporal_sigma, dim=1)
        masks = strength > threshold
        return (masks[:1] | masks[1:]).float().transpose(1, 2)
    masks = _word_strength(maps, selectors, latent_hw) > threshold
    return (masks[:1] | masks[1:]).float()


def smooth_over_frames(strength: torch.Tensor, sigma: float, dim: int = 1) -> torch.Tensor:
    """A Gaussian-weighted maximum along the frames axis ``dim``: frame ``t`` becomes
    ``max_s exp(-(t - s)² / 2σ²) · strength[s]`` (σ in frames; 0 leaves it as it is).

    A maximum, not a Gaussian mean, because the error that matters in video editing (Video-P2P,
    FateZero blend per frame) is a frame whose mask misses the object: there the source object
    shows through for a frame and the edit flickers. The weighted maximum never shrinks a frame's
    own region (weight 1 at distance 0), lends a frame its neighbours' regions at a strength that
    falls with their distance (so a frame where the word's attention dipped, as under occlusion or
    motion blur, keeps the object's region), and leaves a mask that is constant in time unchanged.
    A Gaussian mean would instead lower a moving object's strength at its own place in every
    frame (averaged with frames where it is elsewhere), so after the threshold its mask could miss
    it in all of them; and it would shrink a region seen in one frame only. The maximum is
    Prompt-to-Prompt's own 3×3 spatial max-pool carried over to time with a soft, tunable reach:
    with threshold θ a region of strength ``a`` reaches ``σ·sqrt(2·ln(a / θ))`` frames.
    """
    if sigma <= 0 or strength.shape[dim] < 2:
        return strength
    frames = strength.shape[dim]
    along = strength.movedim(dim, 0)
    smoothed = along.clone()
    for distance in range(1, frames):
        weight = math.exp(-distance * distance / (2.0 * sigma * sigma))
        if weight < 1e-6:  # strengths are at most 1: farther frames cannot pass a threshold above 1e-6
            break
        smoothed[:-distance] = torch.maximum(smoothed[:-distance], weight * along[distance:])
        smoothed[distance:] = torch.maximum(smoothed[distance:], weight * along[:-distance])
    return smoothed.movedim(0, dim)


def _word_strength(maps: torch.Tensor, selectors: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """``[B, 1, h, w]`` strength of each item's words from its maps ``[B, H, W, N]``, normalised
    to its maximum (1 at the peak; the mask is where it exceeds the threshold)."""
    selected = (maps * selectors[:, None, None, :].to(maps)).sum(-1).unsqueeze(1)
    selected = F.max_pool2d(selected, 3, stride=1, padding=1)
    selected = F.interpolate(selected, size=latent_hw)
    peak = selected.amax(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(selected.dtype).tiny)
    return selected / peak


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
    # the smoothing is passed only when asked for, so that without it the call is the one it always was
    smoothing = {"temporal_sigma": blend.temporal_smoothing} if blend.temporal_smoothing > 0 else {}
    mask = blend_mask(maps, selectors.to(maps.device), tuple(denoised.shape[-2:]), blend.threshold, **smoothing)
    return blend_denoised(x, denoised, mask.to(denoised.device), s, s_next)
