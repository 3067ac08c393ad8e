"""The batch editor's manifests (scripts/edit_manifest.py): PIE-Bench's run-length masks decoded as
its evaluation code does, bracketed prompts, per-row errors. No ComfyUI needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edit_manifest import RowError, check_alignment, mask_decode, mask_encode, read_manifest, split_brackets


def pie_bench_mask_decode(encoded_mask, image_shape=(512, 512)):
    """PIE-Bench's mask_decode (cure-lab/PnPInversion, evaluation), loop for loop."""
    length = image_shape[0] * image_shape[1]
    mask_array = np.zeros((length,))
    for i in range(0, len(encoded_mask), 2):
        splice_len = min(encoded_mask[i + 1], length - encoded_mask[i])
        for j in range(splice_len):
            mask_array[encoded_mask[i] + j] = 1
    mask_array = mask_array.reshape(image_shape[0], image_shape[1])
    mask_array[0, :] = 1
    mask_array[-1, :] = 1
    mask_array[:, 0] = 1
    mask_array[:, -1] = 1
    return mask_array


@pytest.mark.parametrize("shape", [(512, 512), (24, 40)])
def test_masks_decode_as_pie_bench_decodes_them(shape):
    rng = np.random.default_rng(0)
    length = shape[0] * shape[1]
    starts = np.sort(rng.choice(length, 12, replace=False))
    encoded = [int(v) for start in starts for v in (start, int(rng.integers(1, 200)))]
    encoded[-1] = length  # a run past the end is cut
    ours = mask_decode(encoded, shape)
    assert ours.dtype == bool and np.array_equal(ours, pie_bench_mask_decode(encoded, shape) == 1)
    inner = np.zeros(shape, dtype=bool)
    inner[3:9, 5:20] = True
    assert np.array_equal(mask_decode(mask_encode(inner), shape)[1:-1, 1:-1], inner[1:-1, 1:-1])


@pytest.mark.parametrize("encoded", [[5, 10, 7], [1.5, 2], [-1, 3], "1 2", [10 ** 7, 2]])
def test_a_broken_mask_is_a_row_error(encoded):
    with pytest.raises(RowError, match="mask"):
        mask_decode(encoded, (64, 64))


def test_brackets_mark_the_edited_words_and_the_rest_must_align():
    assert split_brackets("a [red  cat] on [the] mat", "p") == ("a red cat on the mat", ["red", "cat", "the"])
    with pytest.raises(RowError, match="pair up"):
        split_brackets("a [red cat on a mat", "p")
    check_alignment("a [cat] on a mat", "a [dog] on a mat")
    check_alignment("a bicycle on the road", "a [rusty] bicycle on the road")  # an added word
    with pytest.raises(RowError, match="cannot be aligned"):
        check_alignment("a [cat] on a mat", "a [dog] under a table")


def test_pie_bench_and_json_lines_manifests(tmp_path):
    images = tmp_path / "annotation_images" / "0_random_140"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(images / "a.jpg")
    good = {"image_path": "0_random_140/a.jpg", "original_prompt": "a [cat] sitting", "editing_prompt": "a [dog] sitting",
            "editing_instruction": "make it a dog", "editing_type_id": "1", "blended_word": "cat dog", "mask": [17, 3]}
    (tmp_path / "mapping_file.json").write_text(json.dumps({
        "000": good, "001": {**good, "blended_word": "cat"}, "002": {**good, "editing_prompt": ""}}))
    rows, errors = read_manifest(tmp_path / "mapping_file.json")
    assert [r.id for r in rows] == ["000"] and {e[0] for e in errors} == {"001", "002"}
    row = rows[0]
    assert (row.source_prompt, row.target_prompt, row.source_words, row.target_words) == \
        ("a cat sitting", "a dog sitting", ["cat"], ["dog"])
    assert row.blend_words == ("cat", "dog") and row.edit_type == "1" and row.instruction == "make it a dog"
    pixels, mask = row.load()
    assert pixels.shape == (16, 16, 3) and mask.shape == (16, 16) and mask[1, 1:4].all() and not mask[1, 4]

    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(tmp_path / "small_mask.png")
    lines = [{"id": "x", "image": "annotation_images/0_random_140/a.jpg", "source_prompt": "a cat", "target_prompt": "a dog"},
             {"id": "y", "image": "annotation_images/0_random_140/a.jpg", "source_prompt": "a cat",
              "target_prompt": "a dog", "mask": "small_mask.png"},
             {"id": "z", "image": "nothing.jpg", "source_prompt": "a cat"}]
    (tmp_path / "rows.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    rows, errors = read_manifest(tmp_path / "rows.jsonl")
    assert [r.id for r in rows] == ["x", "y"] and errors == [("z", "missing target_prompt")]
    assert rows[0].load()[1] is None
    with pytest.raises(RowError, match="is 8x8, the image 16x16"):
        rows[1].load()
