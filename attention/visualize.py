"""Attention maps → one image grid, one tile per token with the token's text under it."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .errors import P2PInputError

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
        _centred_label(draw, font, label, x, y + tile + 4, tile)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]


# -- a video's maps ----------------------------------------------------------------------------------

FRAME_MODES = ("average", "grid", "per frame")
FRAME_GAP = 2  # white pixels between the rows (frames) and columns (words) of a grid
CAPTION_HEIGHT = 20  # the strip above each image of 'per frame' that names the frame


def frame_tiles(maps: torch.Tensor, columns: Sequence[int], tile: int,
                frames: torch.Tensor | None = None) -> torch.Tensor:
    """``[F, T, tile, tile, 3]`` tiles of a video's ``maps [F, H, W, N]`` at ``columns``.

    Each word's tiles share one scale over all frames (its maximum over the video), so that a frame
    where the word's attention fades shows darker and an animation does not pump; with ``frames
    [F, h, w, 3]`` (one decoded picture per latent frame) each heat map is laid over its frame.
    """
    count = maps.shape[0]
    selected = maps[..., list(columns)].permute(0, 3, 1, 2).float()  # [F, T, H, W]
    words = selected.shape[1]
    selected = F.interpolate(selected.flatten(0, 1).unsqueeze(1), size=(tile, tile), mode="bilinear",
                             align_corners=False).view(count, words, tile, tile)
    peak = selected.amax(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12)
    heat = heat_colors(selected / peak)
    if frames is None:
        return heat
    base = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(tile, tile), mode="bilinear", align_corners=False)
    return 0.5 * base.permute(0, 2, 3, 1).cpu()[:, None] + 0.5 * heat


def frame_table(tiles: torch.Tensor, labels: Sequence[str], columns_per_row: int) -> torch.Tensor:
    """A video's tiles ``[F, T, tile, tile, 3]`` as one table, returned as an IMAGE ``[1, H, W, 3]``:
    one row per frame ("frame k" at its left, k the latent frame from 0), one column per word (its
    label above); more words than ``columns_per_row`` continue in further bands of all the frames."""
    count, words, tile = tiles.shape[0], tiles.shape[1], tiles.shape[2]
    per_row = max(1, min(columns_per_row, words))
    bands = -(-words // per_row)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = int(max(measure.textlength(f"frame {k}", font=font) for k in range(count))) + 12
    band_height = LABEL_HEIGHT + count * tile + (count - 1) * FRAME_GAP
    width = margin + per_row * tile + (per_row - 1) * FRAME_GAP
    canvas = Image.new("RGB", (width, bands * band_height + (bands - 1) * LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (tiles.clamp(0, 1).numpy() * 255).astype(np.uint8)
    for band in range(bands):
        top = band * (band_height + LABEL_HEIGHT)
        for slot, word in enumerate(range(band * per_row, min(words, (band + 1) * per_row))):
            _centred_label(draw, font, labels[word], margin + slot * (tile + FRAME_GAP), top + 4, tile)
        for k in range(count):
            y = top + LABEL_HEIGHT + k * (tile + FRAME_GAP)
            draw.text((6, y + (tile - LABEL_HEIGHT) / 2 + 4), f"frame {k}", fill="black", font=font)
            for slot, word in enumerate(range(band * per_row, min(words, (band + 1) * per_row))):
                canvas.paste(Image.fromarray(pixels[k, word]), (margin + slot * (tile + FRAME_GAP), y))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]


def frame_sequence(tiles: torch.Tensor, labels: Sequence[str], columns_per_row: int) -> torch.Tensor:
    """A video's tiles ``[F, T, tile, tile, 3]`` as an IMAGE batch ``[F, H, W, 3]``, one labelled grid
    per frame under a caption naming the frame, for an animated image (SaveAnimatedWEBP / PNG)."""
    count = tiles.shape[0]
    pictures = []
    for k in range(count):
        grid = label_grid(tiles[k], labels, columns_per_row)[0]
        caption = Image.new("RGB", (grid.shape[1], CAPTION_HEIGHT), "white")
        draw = ImageDraw.Draw(caption)
        font = ImageFont.load_default()
        _centred_label(draw, font, f"latent frame {k} (0-{count - 1})", 0, 4, grid.shape[1])
        strip = torch.from_numpy(np.asarray(caption, dtype=np.float32) / 255.0)
        pictures.append(torch.cat([strip, grid]))
    return torch.stack(pictures)


def _centred_label(draw: ImageDraw.ImageDraw, font, label: str, x: float, y: float, width: int) -> None:
    text = label if draw.textlength(label, font=font) <= width - 4 else label[: max(1, width // 8)] + "…"
    draw.text((x + (width - draw.textlength(text, font=font)) / 2, y), text, fill="black", font=font)


def item_frames(images: torch.Tensor, batch: int, item: int, frames: int) -> torch.Tensor:
    """The decoded pictures of batch ``item`` that its ``frames`` latent frames show, ``[frames, h, w, 3]``.

    ``images`` is VAE Decode's output for the sampler's batch of ``batch`` videos: their pixel
    frames one video after the other (ComfyUI flattens ``[B, T, h, w, 3]``). Latent frame ``k`` is
    shown over the pixel frame at the same time in the video, ``round(k·(T−1)/(frames−1))``
    (Wan: 4k, the last pixel frame that latent frame encodes).
    """
    total = images.shape[0]
    if total % batch:
        raise P2PInputError(f"images: {total} pictures are not the {batch} videos of the batch; "
                            "connect VAE Decode of this sampler's output")
    per_video = total // batch
    video = images[item * per_video:(item + 1) * per_video]
    if frames == 1:
        return video[:1]
    picks = [round(k * (per_video - 1) / (frames - 1)) for k in range(frames)]
    return video[picks]


def render_maps(maps: torch.Tensor, columns: Sequence[int], labels: Sequence[str], tile: int, columns_per_row: int,
                frames: str = "average", pictures: torch.Tensor | None = None) -> torch.Tensor:
    """The maps node's picture of one item's maps: ``[H, W, N]`` (an image's) or ``[F, H, W, N]``
    (a video's, F latent frames) at ``columns``, labelled with ``labels`` (one a column).

    ``frames`` says how a video's frames are shown: ``average`` (one grid of the maps averaged
    over the frames, as :func:`label_grid` shows an image's), ``grid`` (a table with a row per
    frame: :func:`frame_table`) or ``per frame`` (an IMAGE batch, a labelled grid per frame:
    :func:`frame_sequence`). An image, or a one-frame video, gives its single grid for all three.
    ``pictures``: the item's decoded picture ``[h, w, 3]`` under an image's maps, or one a latent
    frame ``[F, h, w, 3]`` under a video's (``average`` lays the maps over the middle one).
    """
    if frames not in FRAME_MODES:
        raise P2PInputError(f"frames: {frames!r} is not one of {list(FRAME_MODES)}")
    if maps.ndim == 4 and maps.shape[0] == 1:  # a one-frame video is shown as an image
        maps = maps[0]
        pictures = pictures[0] if pictures is not None and pictures.ndim == 4 else pictures
    if maps.ndim == 3:
        return label_grid(token_tiles(maps, columns, tile, pictures), labels, columns_per_row)
    if frames == "average":
        middle = pictures[pictures.shape[0] // 2] if pictures is not None else None
        return label_grid(token_tiles(maps.mean(0), columns, tile, middle), labels, columns_per_row)
    tiles = frame_tiles(maps, columns, tile, pictures)
    if frames == "grid":
        return frame_table(tiles, labels, columns_per_row)
    return frame_sequence(tiles, labels, columns_per_row)
