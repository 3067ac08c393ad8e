"""A short test video for the example workflows' Load Video nodes: an H.264 MP4 (what a user loads)
written with PyAV, which every supported host's requirements include (ComfyUI reads videos with it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_FRAMES = 5  # 1 + 4: Wan's VAE packs frames 1 + 4k into 1 + k latent frames
VIDEO_FPS = 16


def video_frames(frames: int = VIDEO_FRAMES, size: int = 64) -> np.ndarray:
    """[frames, size, size, 3] uint8: a smooth gradient with a square that moves right frame by frame
    (so that the frames differ and the video's motion is visible)."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    background = np.stack([x, y, 0.5 * (1 - x) + 0.25 * y], axis=-1)
    video = np.repeat(background[None], frames, axis=0)
    side = size // 4
    for frame in range(frames):
        left = size // 8 + frame * size // (2 * frames)
        video[frame, size // 3:size // 3 + side, left:left + side] = (0.9, 0.25, 0.1)
    return np.round(video * 255).astype(np.uint8)


def write_test_video(path: Path, frames: int = VIDEO_FRAMES, size: int = 64) -> Path:
    """Write video_frames as an H.264 MP4 (yuv420p, near-lossless crf) at VIDEO_FPS."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=VIDEO_FPS)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        for pixels in video_frames(frames, size):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
