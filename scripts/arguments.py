"""Argument checks for the command-line tools, run before anything slow starts (ComfyUI, torch,
sampling): each bad argument ends the tool with one line that names the option and says what to
do, and exit status 2 (argparse's, for a usage error)."""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Callable, NoReturn

CHECKPOINT_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
"""What ComfyUI's loaders read (folder_paths.supported_pt_extensions, less the pickles it warns of)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block): ``prog: problem (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def fail(message: str) -> NoReturn:
    """End the tool with a one-line message (exit status 2: a bad argument)."""
    print(message.replace("\n", " "), file=sys.stderr)
    raise SystemExit(2)


def number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for a finite int/float in [low, high] (``low_open``: > low)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{text} is too small: give a value {'>' if low_open else '≥'} {low:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} is too large: give a value ≤ {high:g}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _kind(option: str, value: str, path: Path) -> str | None:
    """"file", "folder", "other" or None (not there); a name the system refuses ends the tool."""
    try:
        if not path.exists():
            return None
        return "folder" if path.is_dir() else "file" if path.is_file() else "other"
    except OSError as error:  # e.g. ENAMETOOLONG: Path.exists() lets it through
        fail(f"{option}: {value[:60]!r}… cannot be used ({error.strerror}); give a shorter path")
    except ValueError:  # a NUL byte
        fail(f"{option}: {value!r} is not a valid path")


def input_file(option: str, value: str, what: str = "file") -> Path:
    """An existing, readable file (not a folder)."""
    path = Path(value).expanduser()
    kind = _kind(option, value, path)
    if kind == "folder":
        fail(f"{option}: {value!r} is a folder; give a {what} in it")
    if kind != "file":
        fail(f"{option}: no file {value!r}; give the path of an existing {what}")
    if not os.access(path, os.R_OK):
        fail(f"{option}: {value!r} cannot be read; check its permissions")
    return path


def input_folder(option: str, value: str) -> Path:
    path = Path(value).expanduser()
    kind = _kind(option, value, path)
    if kind != "folder":
        fail(f"{option}: {value!r} is {'not there' if kind is None else 'not a folder'}; give an existing folder")
    return path


def _writable_place(option: str, path: Path, value: str) -> None:
    """The nearest existing folder above `path` must be writable (the rest is created later)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        fail(f"{option}: {value!r} cannot be made: {str(parent)!r} is a file; choose another place")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{option}: cannot write into {str(parent)!r}; choose a folder you can write to")


def output_folder(option: str, value: str) -> tuple[Path, list[Path]]:
    """A folder to write into, made now (so that a place that cannot be written to fails before the
    work, not after it): (the folder, the folders made for it, deepest first, for `remove_if_empty`)."""
    path = Path(value).expanduser()
    kind = _kind(option, value, path)
    if kind in ("file", "other"):
        fail(f"{option}: {value!r} is a file; give a folder (it is created if missing)")
    if kind is None:
        _writable_place(option, path, value)
    made = [p for p in [path, *path.absolute().parents] if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_")
        probe.close()
    except OSError as error:
        remove_if_empty(made)
        fail(f"{option}: cannot write into {value!r} ({error.strerror}); choose a folder you can write to")
    return path, made


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a tool made for an output it did not write (deepest first)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def output_file(option: str, value: str, suffix: str) -> Path:
    """A file to write (its folders are created if missing); never a folder."""
    path = Path(value).expanduser()
    kind = _kind(option, value, path)
    if kind == "folder":
        fail(f"{option}: {value!r} is a folder; give a file name ending in {suffix}")
    if not path.name.endswith(suffix):
        fail(f"{option}: {value!r} must end in {suffix}")
    if kind is not None and not os.access(path, os.W_OK):
        fail(f"{option}: {value!r} cannot be overwritten; check its permissions or choose another name")
    _writable_place(option, path, value)
    return path


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a safetensors file (its header is checked, not its tensors), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "it is too short to be a safetensors file"
            (length,) = struct.unpack("<Q", head)
            size = path.stat().st_size
            if not 2 <= length <= min(size - 8, 100_000_000):
                return "it has no safetensors header (a pickle .ckpt renamed, or a truncated download?)"
            header = json.loads(f.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return f"its safetensors header is unreadable ({error})"
    if not isinstance(header, dict):
        return "its safetensors header is not a table of tensors"
    return None


def checkpoint_file(option: str, value: str, suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES) -> Path:
    """An existing model file of a kind ComfyUI loads; a .safetensors one must have a valid header."""
    path = input_file(option, value, "model file (.safetensors)")
    if path.suffix.lower() not in suffixes:
        fail(f"{option}: {value!r} is not a model file ({', '.join(suffixes)}); give a .safetensors file")
    if path.suffix.lower() in (".safetensors", ".sft"):
        problem = safetensors_problem(path)
        if problem:
            fail(f"{option}: {value!r} is not a valid safetensors file: {problem}; download or convert it again")
    return path


def free_name(path: Path) -> Path:
    """`path`, or `stem_1.suffix`, `stem_2.suffix`… if it exists: a finished result is never overwritten."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate
