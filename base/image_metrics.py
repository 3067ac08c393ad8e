"""Reconstruction metrics: PSNR and SSIM between images, MSE between latents (plain torch).

One home for the inversion's reconstruction check and the evaluation of edits, which both
measure images against their source."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import PromptEditError


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise PromptEditError(f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ; compare images of the same size and batch")


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-item PSNR in dB of images ``[B, H, W, C]`` in 0..``peak`` (inf where identical)."""
    _check_pair(a, b, "psnr")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-item SSIM (Wang et al. 2004: 11×11 Gaussian window σ 1.5, K1 0.01, K2 0.03) of images
    ``[B, H, W, C]``, averaged over channels and valid window positions."""
    _check_pair(a, b, "ssim")
    x, y = (t.double().permute(0, 3, 1, 2) for t in (a, b))
    channels = x.shape[1]
    window = _gaussian_window().to(x.device).expand(channels, 1, -1, -1)
    blur = lambda t: F.conv2d(t, window, groups=channels)  # noqa: E731
    if min(x.shape[-2:]) < window.shape[-1]:
        raise PromptEditError(f"ssim: images of {tuple(x.shape[-2:])} pixels are smaller than the 11×11 window")
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def latent_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check_pair(a, b, "latent mse")
    return (a.double() - b.double()).pow(2).flatten(1).mean(1)
