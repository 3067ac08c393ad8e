"""Attention maps → one image grid, one tile per token with the token's text under it."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 20


def heat_colors(x: torch.Tensor) -> torch.Tensor:
    """Map ``[..., H, W]`` values in 0..1 to RGB ``[..., H, W, 3]`` (black → red → yellow → white)."""
    return torch.stack([(3 * x).clamp(0, 1), (3 * x - 1).clamp(0, 1), (3 * x - 2).clamp(0, 1)], dim=-1)


def token_tiles(maps: torch.Tensor, columns: Sequence[int], tile: int, image: torch.Tensor | None = None) -> torch.Tensor:
    """``[T, tile, tile, 3]`` tiles of ``maps [H, W, N]`` at ``columns``, each normalised to its max.

    With ``image [h, w, 3]`` the heat map is laid over the (resized) image, as in the paper's figures.
    """
    selected = maps[..., list(columns)].permute(2, 0, 1).unsqueeze(1).float()  # [T, 1, H, W]
    selected = F.interpolate(selected, size=(tile, tile), mode="bilinear", align_corners=False).squeeze(1)
    peak = selected.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    heat = heat_colors(selected / peak)
    if image is None:
        return heat
    base = F.interpolate(image.permute(2, 0, 1)[None].float(), size=(tile, tile), mode="bilinear", align_corners=False)
    base = base[0].permute(1, 2, 0).cpu()
    return 0.5 * base[None] + 0.5 * heat


def label_grid(tiles: torch.Tensor, labels: Sequence[str], columns_per_row: int) -> torch.Tensor:
    """Arrange tiles in rows with a text label under each; returns an IMAGE ``[1, H, W, 3]``."""
    count, tile = tiles.shape[0], tiles.shape[1]
    per_row = max(1, min(columns_per_row, count))
    rows = -(-count // per_row)
    canvas = Image.new("RGB", (per_row * tile, rows * (tile + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    pixels = (tiles.clamp(0, 1).numpy() * 255).astype(np.uint8)
    for i, (tile_px, label) in enumerate(zip(pixels, labels)):
        x, y = (i % per_row) * tile, (i // per_row) * (tile + LABEL_HEIGHT)
        canvas.paste(Image.fromarray(tile_px), (x, y))
        text = label if draw.textlength(label, font=font) <= tile - 4 else label[: max(1, tile // 8)] + "…"
        width = draw.textlength(text, font=font)
        draw.text((x + (tile - width) / 2, y + tile + 4), text, fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]
