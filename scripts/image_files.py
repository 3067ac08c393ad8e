"""Image files for the command-line tools: read a batch, write a batch."""

from __future__ import annotations

import sys
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def load_images(paths: list[str], option: str, multiple_of: int = 8):
    """IMAGE batch [N, H, W, 3] in [0, 1] of image files and folders; exits naming `option` when
    nothing is readable, the sizes differ, or they are not multiples of `multiple_of`."""
    import numpy as np
    import torch
    from PIL import Image

    files = []
    for name in paths:
        path = Path(name)
        files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        sys.exit(f"{option}: no image files found")
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0))
        except OSError as error:
            sys.exit(f"{option}: cannot read {file}: {error}")
    sizes = {tuple(image.shape[:2]) for image in images}
    if len(sizes) > 1:
        sys.exit(f"{option}: the images have different sizes {sorted(sizes)}; resize them to one size")
    height, width = sizes.pop()
    if height % multiple_of or width % multiple_of:
        sys.exit(f"{option}: size {width}x{height} is not a multiple of {multiple_of}; crop or resize the images")
    return torch.stack(images)


def save_images(images, directory: Path, prefix: str) -> list[Path]:
    """Write an IMAGE batch as PNG files ``prefix_00000.png``…; return their paths."""
    import numpy as np
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = directory / f"{prefix}_{i:05d}.png"
        Image.fromarray(np.clip(image.cpu().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths
