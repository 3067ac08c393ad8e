"""Image files for the command-line tools: read a batch, write a batch."""

from __future__ import annotations

from pathlib import Path

from arguments import fail, input_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def image_files(paths: list[str], option: str) -> list[Path]:
    """The image files named by `paths` (files, and the images inside folders); ends the tool
    naming `option` when a path is missing or nothing is left. Cheap: run it before slow work."""
    files = []
    for name in paths:
        path = Path(name).expanduser()
        if _is_dir(option, name, path):
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            files.append(input_file(option, name, "image file or a folder of images"))
    if not files:
        fail(f"{option}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(repr, paths))}")
    return files


def _is_dir(option: str, name: str, path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError as error:
        fail(f"{option}: {name[:60]!r}… cannot be used ({error.strerror}); give a shorter path")


def load_images(paths: list[str], option: str, multiple_of: int = 8):
    """IMAGE batch [N, H, W, 3] in [0, 1] of image files and folders; ends the tool naming `option`
    when a path is missing, nothing is readable, the sizes differ, or they are not multiples of
    `multiple_of`."""
    files = image_files(paths, option)
    import numpy as np
    from PIL import Image

    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
        except OSError as error:  # PIL.UnidentifiedImageError too
            fail(f"{option}: cannot read {str(file)!r} as an image ({error}); give PNG, JPEG or WebP files")
    sizes = {image.shape[:2] for image in images}
    if len(sizes) > 1:
        fail(f"{option}: the images have different sizes {sorted(sizes)}; resize them to one size")
    height, width = sizes.pop()
    if height % multiple_of or width % multiple_of:
        fail(f"{option}: size {width}x{height} is not a multiple of {multiple_of}; crop or resize the images")
    import torch  # after the checks: importing it takes seconds

    return torch.from_numpy(np.stack(images))


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
