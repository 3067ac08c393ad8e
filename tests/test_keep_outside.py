"""Keep Outside Mask's maths without ComfyUI (inversion/keep_outside.py): the mask on the latent
grid, dilation and feathering that leave the outside exactly zero, and one Euler step that lands
the outside on the pivot whatever the item held."""

from __future__ import annotations

import torch

from comfyui_prompt_edit.inversion.keep_outside import (
    difference_mask,
    feather,
    kept_outside,
    latent_mask,
    spatial_difference,
)


def test_a_pixel_mask_marks_every_latent_cell_it_touches_and_feathering_stays_finite():
    pixels = torch.zeros(1, 64, 64)
    pixels[0, 20, 33] = 1.0  # one pixel: its 8x8 cell (2, 4)
    cells = latent_mask(pixels, (8, 8))
    assert cells.shape == (1, 1, 8, 8) and cells.sum() == 1 and cells[0, 0, 2, 4] == 1
    grown = latent_mask(pixels, (8, 8), dilation=1)
    assert grown.sum() == 9
    soft = latent_mask(pixels, (8, 8), dilation=1, feathering=2)
    assert torch.equal(soft[grown > 0], grown[grown > 0])  # the mask itself stays 1
    ring = (soft > 0) & (grown == 0)
    assert ring.any() and bool((soft[ring] < 1).all())  # a soft edge outside it
    assert torch.equal(soft > 0, latent_mask(pixels, (8, 8), dilation=3) > 0)  # nothing beyond 2 cells of feather


def test_feathering_nothing_changes_nothing():
    mask = (torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    assert torch.equal(feather(mask, 0), mask)


def test_the_difference_mask_is_where_the_difference_reaches_the_threshold_of_its_peak():
    difference = torch.zeros(2, 1, 4, 4)
    difference[0, 0, 1, 1], difference[0, 0, 2, 2] = 1.0, 0.2
    mask = difference_mask(difference, 0.3)
    assert mask[0].sum() == 1 and mask[0, 0, 1, 1] == 1
    assert mask[1].sum() == 0  # nothing differs: nothing is edited
    a, b = torch.zeros(1, 16, 1, 4, 4), torch.ones(1, 16, 1, 4, 4)  # 5-D (Qwen-Image, Wan): channels and frames
    assert torch.equal(spatial_difference(a, b), torch.ones(1, 1, 4, 4))


def test_one_euler_step_lands_the_outside_on_the_pivot_whatever_the_item_held():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, 6, generator=generator)
    denoised = torch.randn(3, 4, 6, 6, generator=generator)
    pivot = torch.randn(4, 6, 6, generator=generator)
    sigma, sigma_next = 0.8, 0.6
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :3] = 1
    out = kept_outside(x, denoised, sigma, sigma_next, pivot, mask)
    stepped = x + (sigma_next - sigma) * (x - out) / sigma  # ComfyUI's Euler step
    torch.testing.assert_close(stepped[1:, ..., 3:], pivot[..., 3:].expand(2, -1, -1, -1), rtol=1e-5, atol=1e-5)
    assert torch.equal(out[1:, ..., :3], denoised[1:, ..., :3]) and torch.equal(out[0], denoised[0])
    last = kept_outside(x, denoised, sigma, 0.0, pivot, mask)  # the last step (σ = 0) is the pivot itself
    assert torch.equal(last[1:, ..., 3:], pivot[..., 3:].expand(2, -1, -1, -1))
