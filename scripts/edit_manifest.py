"""Edit manifests for scripts/batch_edit.py: PIE-Bench's ``mapping_file.json`` as published, or JSON
Lines of our own; each row checked on its own (image, prompts, mask) so that one bad row is
reported and the others run.

PIE-Bench (Ju et al. 2023, "Direct Inversion"): ``{id: {image_path, original_prompt,
editing_prompt, editing_instruction, editing_type_id, blended_word, mask}}``; the edited words are
in ``[ ]`` in the prompts, ``blended_word`` is "source_word target_word", ``mask`` is run-length
encoded (``mask_decode``). JSON Lines: ``{id, image, source_prompt, target_prompt}`` with optional
``blend_words`` ("source target" or a pair), ``instruction``, ``mask`` (a PNG file), ``edit_type``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PIE_BENCH_MANIFEST = "mapping_file.json"
PIE_BENCH_IMAGES = "annotation_images"


class RowError(ValueError):
    """One row of the manifest cannot be run; the message says which field and why."""


@dataclass
class EditRow:
    id: str
    image: Path
    source_prompt: str  # without the [ ]
    target_prompt: str
    source_words: list[str] = field(default_factory=list)  # the words in [ ] (edited)
    target_words: list[str] = field(default_factory=list)
    blend_words: tuple[str, str] | None = None
    instruction: str | None = None
    edit_type: str | None = None
    mask_rle: list[int] | None = None
    mask_file: Path | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(RGB image uint8 [H, W, 3], edit mask bool [H, W] or None) at the image's size;
        RowError when the image or the mask cannot be used."""
        from PIL import Image

        if not self.image.is_file():
            raise RowError(f"image: {self.image} does not exist")
        try:
            with Image.open(self.image) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise RowError(f"image: cannot read {self.image} ({error})") from None
        shape = pixels.shape[:2]
        if self.mask_rle is not None:
            return pixels, mask_decode(self.mask_rle, shape)
        if self.mask_file is not None:
            try:
                with Image.open(self.mask_file) as image:
                    mask = np.asarray(image.convert("L")) > 127
            except OSError as error:
                raise RowError(f"mask: cannot read {self.mask_file} ({error})") from None
            if mask.shape != shape:
                raise RowError(f"mask: {self.mask_file} is {mask.shape[1]}x{mask.shape[0]}, the image "
                               f"{shape[1]}x{shape[0]}; give a mask of the image's size")
            return pixels, mask
        return pixels, None


def mask_decode(encoded: list[int], shape: tuple[int, int] = (512, 512)) -> np.ndarray:
    """PIE-Bench's run-length mask as its evaluation decodes it: pairs ``[start, length]`` over the
    flattened ``H x W`` array set to 1 (a run is cut at the end), then the one-pixel border set to 1
    ("to avoid annotation errors in boundary"). Returns bool [H, W]; RowError for a list that is
    not such pairs."""
    if not isinstance(encoded, list) or len(encoded) % 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in encoded):
        raise RowError("mask: not a run-length list of non-negative integer pairs [start, length, ...]")
    length = shape[0] * shape[1]
    flat = np.zeros(length, dtype=bool)
    for start, run in zip(encoded[0::2], encoded[1::2]):
        if start >= length:
            raise RowError(f"mask: a run starts at {start}, beyond the {shape[1]}x{shape[0]} image; "
                           "decode it at the image's size")
        flat[start:start + run] = True
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def mask_encode(mask: np.ndarray) -> list[int]:
    """The run-length list of a bool mask (inverse of mask_decode away from the border)."""
    flat = np.concatenate([[False], np.asarray(mask, dtype=bool).ravel(), [False]])
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    starts, ends = changes[0::2], changes[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def split_brackets(prompt: str, name: str) -> tuple[str, list[str]]:
    """(prompt without the brackets, the words inside them); RowError when they do not pair up."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError(f"{name}: empty")
    words = [word for span in _BRACKETS.findall(prompt) for word in span.split()]
    plain = _BRACKETS.sub(lambda m: m.group(1), prompt)
    if "[" in plain or "]" in plain:
        raise RowError(f"{name}: the [ ] around the edited words do not pair up: {prompt!r}")
    return " ".join(plain.split()), words


def check_alignment(source: str, target: str) -> None:
    """The words outside [ ] must be the same in both prompts (the edit changes only the bracketed
    words); otherwise the two prompts' words cannot be aligned for Prompt-to-Prompt."""
    kept = [" ".join(_BRACKETS.sub(" ", p).split()) for p in (source, target)]
    if "[" not in source + target:
        return  # no marked words: the aligner of the P2P node pairs them up
    if kept[0].split() != kept[1].split():
        raise RowError(f"original_prompt / editing_prompt: the words outside [ ] differ ({kept[0]!r} vs "
                       f"{kept[1]!r}), so the edited words cannot be aligned; bracket every changed word")


def _row(row_id: str, image: Path, source: str, target: str, **extra) -> EditRow:
    check_alignment(source, target)
    source_plain, source_words = split_brackets(source, "source prompt")
    target_plain, target_words = split_brackets(target, "target prompt")
    blend = extra.pop("blend_words", None)
    if isinstance(blend, str):
        parts = blend.split()
        if len(parts) != 2:
            raise RowError(f"blend words: {blend!r} is not 'source_word target_word'")
        blend = (parts[0], parts[1])
    elif blend is not None:
        if not (isinstance(blend, (list, tuple)) and len(blend) == 2 and all(isinstance(w, str) for w in blend)):
            raise RowError(f"blend_words: {blend!r} is not 'source target' or a pair of strings")
        blend = (blend[0], blend[1])
    return EditRow(row_id, image, source_plain, target_plain, source_words, target_words, blend, **extra)


def read_manifest(path: Path, images: Path | None = None) -> tuple[list[EditRow], list[tuple[str, str]]]:
    """(good rows, [(id, why)] of the rows that cannot be run) of a manifest file. Relative image
    paths start at ``images`` (default: ``annotation_images/`` beside a mapping_file.json, the
    manifest's folder for JSON Lines). Raises ValueError when the file itself cannot be read."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    rows: list[EditRow] = []
    errors: list[tuple[str, str]] = []
    mapping = _pie_bench_mapping(text)
    if mapping is not None:
        base = Path(images) if images else path.parent / PIE_BENCH_IMAGES
        for row_id, entry in mapping.items():
            try:
                if not isinstance(entry, dict):
                    raise RowError("not an object")
                missing = [k for k in ("image_path", "original_prompt", "editing_prompt") if not entry.get(k)]
                if missing:
                    raise RowError(f"missing {', '.join(missing)}")
                rows.append(_row(str(row_id), base / entry["image_path"], entry["original_prompt"],
                                 entry["editing_prompt"], blend_words=entry.get("blended_word") or None,
                                 instruction=entry.get("editing_instruction"),
                                 edit_type=None if entry.get("editing_type_id") is None else str(entry["editing_type_id"]),
                                 mask_rle=entry.get("mask")))
            except RowError as error:
                errors.append((str(row_id), str(error)))
        return rows, errors
    base = Path(images) if images else path.parent
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            errors.append((f"line {number}", f"not JSON ({error})"))
            continue
        row_id = str(entry.get("id", f"line {number}")) if isinstance(entry, dict) else f"line {number}"
        try:
            if not isinstance(entry, dict):
                raise RowError("not an object")
            missing = [k for k in ("id", "image", "source_prompt", "target_prompt") if not entry.get(k)]
            if missing:
                raise RowError(f"missing {', '.join(missing)}")
            rows.append(_row(row_id, base / entry["image"], entry["source_prompt"], entry["target_prompt"],
                             blend_words=entry.get("blend_words"), instruction=entry.get("instruction"),
                             edit_type=None if entry.get("edit_type") is None else str(entry["edit_type"]),
                             mask_file=base / entry["mask"] if entry.get("mask") else None))
        except RowError as error:
            errors.append((row_id, str(error)))
    ids = [row.id for row in rows]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"{path}: the ids {sorted(duplicates)} occur more than once; give every row its own id")
    return rows, errors


def _pie_bench_mapping(text: str) -> dict | None:
    """The manifest as PIE-Bench's {id: entry} mapping, or None for JSON Lines (one object per line,
    each with an "id")."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(whole, dict) and "id" not in whole and "source_prompt" not in whole:
        return whole
    return None
