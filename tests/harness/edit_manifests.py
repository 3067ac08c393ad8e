"""A synthetic benchmark manifest in PIE-Bench's layout (mapping_file.json + annotation_images/)
for the batch-editing tests and benchmark: coloured shapes on dark backgrounds, bracketed prompts
that swap the colour, run-length masks of the shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from edit_manifest import mask_encode

SIZE = 64
COLOURS = {"red": (200, 40, 30), "blue": (30, 60, 200), "green": (30, 180, 60), "yellow": (220, 200, 40)}
SHAPES = ["square", "circle"]


def box_mask(row: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    top, left = 8 + 3 * row, 10 + 2 * row
    mask[top:top + 24, left:left + 20] = True
    return mask


def write_pie_bench(folder: Path, good: int = 8, bad: bool = True) -> Path:
    """mapping_file.json + annotation_images/ in PIE-Bench's layout: ``good`` rows (bracketed
    prompts, run-length masks), and with ``bad`` a row with no image, one whose prompts cannot be
    aligned and one with a broken mask."""
    images = folder / "annotation_images" / "0_random_140"
    images.mkdir(parents=True)
    mapping = {}
    names = list(COLOURS)
    for row in range(good):
        source, target = names[row % 4], names[(row + 1) % 4]
        shape = SHAPES[row // 4 % 2]
        mask = box_mask(row)
        pixels = np.full((SIZE, SIZE, 3), 20 + 10 * row, dtype=np.uint8)
        pixels[mask] = COLOURS[source]
        row_id = f"0000000000{row:02d}"
        Image.fromarray(pixels).save(images / f"{row_id}.jpg", quality=95)
        mapping[row_id] = {"image_path": f"0_random_140/{row_id}.jpg",
                           "original_prompt": f"a [{source}] {shape} on a dark background",
                           "editing_prompt": f"a [{target}] {shape} on a dark background",
                           "editing_instruction": f"make the {shape} {target}", "editing_type_id": str(row % 2),
                           "blended_word": f"{source} {target}", "mask": mask_encode(mask)}
    if bad:
        template = dict(mapping["000000000000"])
        mapping["100000000000"] = {**template, "image_path": "0_random_140/missing.jpg"}
        mapping["100000000001"] = {**template, "editing_prompt": "a [dog] under a table"}
        mapping["100000000002"] = {**template, "mask": [5, 10, 7]}
    path = folder / "mapping_file.json"
    path.write_text(json.dumps(mapping, indent=1))
    return path
