"""The one check of a file name the pack will write (Save Inversion's prefix, the training nodes'
``save_as``, the training script's ``--out``), made before any work starts: a name the file system
refuses would otherwise fail only when the finished result is written."""

from __future__ import annotations

import os

from .errors import PromptEditError

NAME_MAX_BYTES = 255  # ext4, XFS, btrfs, APFS (bytes); NTFS (UTF-16 units, never fewer than bytes here)
# Characters Windows refuses in a name (the pack's files are copied between machines), and folder separators.
FORBIDDEN = set('<>:"/\\|?*')
# Windows device names: "NUL.safetensors" opens the device, not a file.
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


class FileNameError(PromptEditError):
    """A name the pack would write under is not a usable file name; the message says why."""


def name_limit(directory: str | None = None) -> int:
    """The longest file name (bytes) ``directory``'s file system takes (255 where it cannot say)."""
    try:
        return min(NAME_MAX_BYTES, os.pathconf(directory, "PC_NAME_MAX")) if directory else NAME_MAX_BYTES
    except (OSError, ValueError, AttributeError):  # no such folder yet, or no pathconf (Windows)
        return NAME_MAX_BYTES


def file_name_problem(name: object, suffix: str, directory: str | None = None) -> str | None:
    """Why ``name + suffix`` cannot be written as one file in ``directory`` (None when it can).
    ``suffix`` is the longest text the writer appends (a counter, ".safetensors")."""
    if not isinstance(name, str):
        return f"must be text, got {type(name).__name__}"
    if not name:
        return "is empty; give a name"
    control = sorted({repr(c) for c in name if ord(c) < 32 or ord(c) == 127})
    if control:
        return f"holds control characters ({', '.join(control)}); type the name again without them"
    forbidden = sorted(FORBIDDEN & set(name))
    if forbidden:
        return (f"holds {' '.join(forbidden)}: give a plain file name, without folders or any of "
                f"{''.join(sorted(FORBIDDEN))} (the file goes into the pack's model folder)")
    if name.startswith("."):
        return "starts with '.': that makes a hidden file with no name; start it with a letter or digit"
    if name != name.rstrip(". "):
        return "ends with '.' or a space, which Windows drops from file names; remove it"
    if name.split(".")[0].upper() in RESERVED:
        return f"{name.split('.')[0]!r} is a device name on Windows; choose another name"
    try:
        size = len((name + suffix).encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\udXXX" escape
        return "holds characters that are not valid Unicode; type the name again"
    limit = name_limit(directory)
    if size > limit:
        keep = limit - len(suffix.encode("utf-8"))
        return (f"is too long: with {suffix!r} it makes a {size}-byte file name, the file system takes at most "
                f"{limit}; shorten it to at most {keep} bytes")
    return None


def check_file_name(name: object, input_name: str, suffix: str, directory: str | None = None) -> str:
    """``name`` when it is usable (see :func:`file_name_problem`), else a :class:`FileNameError`
    naming ``input_name``."""
    problem = file_name_problem(name, suffix, directory)
    if problem:
        raise FileNameError(f"{input_name}: {name!r} {problem}")
    return name  # type: ignore[return-value]
