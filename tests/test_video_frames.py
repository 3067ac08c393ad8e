"""A video's frames (Wan's latent frames) in plain torch: the local blend's temporal smoothing of the
per-frame masks (attention/local_blend.py) and the maps node's per-frame pictures
(attention/visualize.py). An image, or a one-frame video, must come out exactly as before."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_prompt_edit.attention.local_blend import blend_mask, smooth_over_frames
from comfyui_prompt_edit.attention.visualize import (
    CAPTION_HEIGHT,
    FRAME_GAP,
    FRAME_MODES,
    LABEL_HEIGHT,
    frame_tiles,
    item_frames,
    label_grid,
    render_maps,
    token_tiles,
)

SELECT_WORD = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # both items: the word at column 1


def moving_word(frames: int, left_at: tuple[int, ...]) -> torch.Tensor:
    """Maps ``[2, frames, 4, 4, 3]`` whose word (column 1) attends to the left column of the frames
    ``left_at`` and to the right column of the others; the other columns attend weakly everywhere."""
    maps = torch.full((2, frames, 4, 4, 3), 0.01)
    for k in range(frames):
        maps[:, k, :, 0 if k in left_at else 3, 1] = 1.0
    return maps


# -- temporal smoothing of the local blend -------------------------------------------------------------

def test_video_smoothing_leaves_a_mask_constant_in_time_unchanged():
    strength = torch.rand(2, 1, 1, 8, 8, generator=torch.Generator().manual_seed(0)).expand(2, 6, 1, 8, 8)
    torch.testing.assert_close(smooth_over_frames(strength, 2.5, dim=1), strength, rtol=0, atol=0)


def test_video_smoothing_spreads_a_one_frame_spike_by_its_gaussian_weight():
    strength = torch.zeros(1, 7, 1, 2, 2)
    strength[0, 3] = 1.0
    smoothed = smooth_over_frames(strength, 1.5, dim=1)
    for k in range(7):
        expected = math.exp(-((k - 3) ** 2) / (2 * 1.5 ** 2))
        assert float(smoothed[0, k].min()) == pytest.approx(expected, rel=1e-6), k
    assert torch.equal(smoothed[0, 3], strength[0, 3])  # the spike's own frame keeps its strength


def test_video_smoothing_zero_or_one_frame_is_the_input_itself():
    strength = torch.rand(2, 5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert smooth_over_frames(strength, 0.0, dim=1) is strength
    single = strength[:, :1]
    assert torch.equal(smooth_over_frames(single, 4.0, dim=1), single)


def test_video_blend_mask_without_smoothing_is_each_frame_masked_as_an_image():
    """0 = the behaviour before: every frame's mask is the image mask of that frame's maps."""
    maps = torch.rand(3, 4, 4, 4, 3, generator=torch.Generator().manual_seed(2)) ** 8  # a few strong places
    selectors = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    mask = blend_mask(maps, selectors, (8, 8), 0.5)
    assert torch.equal(blend_mask(maps, selectors, (8, 8), 0.5, temporal_sigma=0.0), mask)
    per_frame = torch.stack([blend_mask(maps[:, k], selectors, (8, 8), 0.5) for k in range(4)], dim=2)
    assert mask.shape == (2, 1, 4, 8, 8) and torch.equal(mask, per_frame)
    assert 0 < float(mask.mean()) < 1  # a mask with both regions: the comparison can fail


def test_video_blend_mask_smoothing_spreads_a_one_frame_region_to_its_neighbours():
    """The word sits left in frame 2 only (right elsewhere). σ = 1 lends frame 2's region to frames 1
    and 3 (weight e^-½ = 0.61 > threshold 0.3) but not to frames 0 and 4 (e^-2 = 0.14), and no frame
    loses its own region."""
    maps = moving_word(5, left_at=(2,))
    plain = blend_mask(maps, SELECT_WORD, (8, 8), 0.3)[0, 0]
    smoothed = blend_mask(maps, SELECT_WORD, (8, 8), 0.3, temporal_sigma=1.0)[0, 0]
    left, right = (slice(None), slice(0, 2)), (slice(None), slice(6, 8))
    assert plain[2][left].min() == 1 and plain[1][left].max() == 0 and plain[3][left].max() == 0
    assert smoothed[1][left].min() == 1 and smoothed[3][left].min() == 1  # neighbours take the spike's region
    assert smoothed[0][left].max() == 0 and smoothed[4][left].max() == 0  # too far for threshold 0.3
    assert smoothed[2][right].min() == 1  # ... and frame 2 takes its neighbours' (right) region
    assert bool((smoothed >= plain).all())  # a frame's own region never shrinks
    neighbours_disagree = lambda m: float((m[1:] != m[:-1]).float().mean())  # noqa: E731
    assert neighbours_disagree(smoothed) < neighbours_disagree(plain)


def test_video_blend_mask_smoothing_leaves_images_and_one_frame_videos_alone():
    maps = moving_word(1, left_at=(0,))
    assert torch.equal(blend_mask(maps, SELECT_WORD, (8, 8), 0.3, temporal_sigma=3.0),
                       blend_mask(maps, SELECT_WORD, (8, 8), 0.3))
    image_maps = maps[:, 0]
    assert torch.equal(blend_mask(image_maps, SELECT_WORD, (8, 8), 0.3, temporal_sigma=3.0),
                       blend_mask(image_maps, SELECT_WORD, (8, 8), 0.3))


# -- the maps node's pictures -------------------------------------------------------------------------

LABELS = ["a", "cat", "on", "a", "bicycle"]


def video_maps(frames: int = 4) -> torch.Tensor:
    """``[frames, 4, 4, 5]``: every word's attention moves one column right a frame and grows."""
    maps = torch.full((frames, 4, 4, 5), 0.01)
    for k in range(frames):
        maps[k, :, k % 4, :] = 0.2 * (k + 1)
    return maps


@pytest.mark.parametrize("frames", FRAME_MODES)
def test_image_maps_look_as_before_whatever_frames_says(frames):
    """An image's maps (and a one-frame video's) give the single labelled grid of before."""
    generator = torch.Generator().manual_seed(3)
    maps, picture = torch.rand(4, 4, 5, generator=generator), torch.rand(16, 16, 3, generator=generator)
    before = label_grid(token_tiles(maps, range(5), 32, picture), LABELS, 3)
    assert torch.equal(render_maps(maps, range(5), LABELS, 32, 3, frames, picture), before)
    assert torch.equal(render_maps(maps[None], range(5), LABELS, 32, 3, frames, picture), before)
    assert torch.equal(render_maps(maps[None], range(5), LABELS, 32, 3, frames, picture[None]), before)


def test_video_maps_average_is_the_grid_of_the_frames_mean():
    maps = video_maps()
    pictures = torch.rand(4, 16, 16, 3, generator=torch.Generator().manual_seed(4))
    got = render_maps(maps, range(5), LABELS, 32, 8, "average", pictures)
    assert torch.equal(got, label_grid(token_tiles(maps.mean(0), range(5), 32, pictures[2]), LABELS, 8))


def test_video_maps_grid_has_a_row_per_frame_and_a_column_per_word():
    maps, tile = video_maps(), 32
    grid = render_maps(maps, range(5), LABELS, tile, 3, "grid")  # 5 words, 3 a row: two bands
    tiles = frame_tiles(maps, range(5), tile)
    band = LABEL_HEIGHT + 4 * tile + 3 * FRAME_GAP
    assert grid.shape[0] == 1 and grid.shape[1] == 2 * band + LABEL_HEIGHT
    margin = grid.shape[2] - 3 * tile - 2 * FRAME_GAP
    assert margin > 30  # room for the "frame k" labels
    for band_index, word in ((0, 1), (1, 4)):  # word 1: first band, 2nd column; word 4: second band
        slot = word % 3
        for k in range(4):
            y = band_index * (band + LABEL_HEIGHT) + LABEL_HEIGHT + k * (tile + FRAME_GAP)
            x = margin + slot * (tile + FRAME_GAP)
            cell = grid[0, y:y + tile, x:x + tile]
            torch.testing.assert_close(cell, tiles[k, word], atol=1 / 255, rtol=0)
    # the frames' label column holds text: dark pixels left of the tiles in every frame's row
    for k in range(4):
        y = LABEL_HEIGHT + k * (tile + FRAME_GAP)
        assert float(grid[0, y:y + tile, :margin].min()) < 0.5, k


def test_video_maps_share_one_scale_over_the_frames():
    """A word whose attention grows over the video shows darker in its early frames."""
    tiles = frame_tiles(video_maps(), range(5), 32)
    brightness = tiles.sum(-1).amax(dim=(2, 3))  # [frames, words]
    assert bool((brightness[1:] > brightness[:-1]).all())
    assert float(brightness[-1].min()) == pytest.approx(3.0)  # the last frame reaches white


def test_video_maps_per_frame_is_an_image_batch_with_a_caption_per_frame():
    maps = video_maps()
    pictures = render_maps(maps, range(5), LABELS, 32, 3, "per frame")
    tiles = frame_tiles(maps, range(5), 32)
    assert pictures.shape[0] == 4
    for k in range(4):
        torch.testing.assert_close(pictures[k, CAPTION_HEIGHT:], label_grid(tiles[k], LABELS, 3)[0], atol=0, rtol=0)
        assert float(pictures[k, :CAPTION_HEIGHT].min()) < 0.5  # the caption's text
    assert not torch.equal(pictures[0, :CAPTION_HEIGHT], pictures[1, :CAPTION_HEIGHT])  # it names the frame


def test_item_frames_pick_each_latent_frames_picture_from_the_items_video():
    """VAE Decode gives a batch of B videos of T pixel frames as [B·T, h, w, 3]; Wan's latent frame k
    (T = 4(F − 1) + 1) is shown over pixel frame 4k of the item's own video."""
    batch, latent_frames = 2, 4
    per_video = 4 * (latent_frames - 1) + 1
    images = torch.arange(batch * per_video, dtype=torch.float32)[:, None, None, None].expand(-1, 2, 2, 3)
    picked = item_frames(images, batch, 1, latent_frames)
    assert picked[:, 0, 0, 0].tolist() == [per_video + 4 * k for k in range(latent_frames)]
    assert item_frames(images[:batch], batch, 1, 1)[:, 0, 0, 0].tolist() == [1.0]
    with pytest.raises(ValueError, match="not the 2 videos"):
        item_frames(images[:-1], batch, 0, latent_frames)
