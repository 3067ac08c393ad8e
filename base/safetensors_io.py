"""Safetensors files: written atomically without ever losing the result, read whole with one clear
error for every way a file can be damaged, and their tensors checked before use."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import PromptEditError

# The pack's files hold a handful of tensors and a short configuration: their JSON header is a few
# KiB. A larger one is refused before it is parsed (safetensors itself takes up to 100 MB).
MAX_HEADER_BYTES = 1 << 20
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class SaveError(PromptEditError):
    """A result could not be written where asked; the message says where it is kept instead."""


def _header_problem(path: Path, max_header_bytes: int) -> str | None:
    """Why ``path`` is no safetensors file with a header of at most ``max_header_bytes``, read from
    its first bytes (None when it may be one)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            start = f.read(9)
    except OSError as e:
        return f"it cannot be opened: {e.strerror or e}"
    header = int.from_bytes(start[:8], "little")
    if len(start) < 8:
        problem = f"it is {size} bytes long, too short (truncated?)"
    elif header > max_header_bytes:
        problem = f"its header is {header} bytes, more than the {max_header_bytes} the pack reads"
    elif 8 + header > size:
        problem = f"it is {size} bytes long, shorter than its header says (truncated?)"
    elif start[8:9] != b"{":
        problem = "it has no JSON header"
    else:
        return None
    # a torch.save file: a zip archive, or (older) a pickle of protocol 2 to 5
    if start.startswith(b"PK\x03\x04") or (start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "it is a PyTorch pickle (.pt / .ckpt) renamed; the pack loads safetensors only"
    return problem


def read_safetensors(path: str | Path, error: type[Exception], advice: str,
                     max_header_bytes: int = MAX_HEADER_BYTES) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of ``path``; raises ``error`` naming the file and ``advice`` when it
    cannot be read (safetensors raises several exception types for a damaged file). The header's
    length is checked before it is parsed."""
    problem = _header_problem(Path(path), max_header_bytes)
    if problem:
        raise error(f"{path}: not a readable safetensors file ({problem}); {advice}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as e:  # noqa: BLE001
        raise error(f"{path}: not a readable safetensors file ({e}); {advice}") from None


def check_tensors(tensors: dict[str, torch.Tensor], path: str | Path, error: type[Exception], advice: str,
                  dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES) -> None:
    """Raise ``error`` naming the file and tensor when one is not of ``dtypes`` or holds NaN or
    infinite values (a NaN weight or latent gives black images, not an error)."""
    for key, tensor in tensors.items():
        if tensor.dtype not in dtypes:
            raise error(f"{path}: tensor {key!r} is {str(tensor.dtype).removeprefix('torch.')}, expected "
                        f"{' or '.join(str(d).removeprefix('torch.') for d in dtypes)}; {advice}")
        if not bool(torch.isfinite(tensor).all()):
            raise error(f"{path}: tensor {key!r} holds NaN or infinite values; {advice}")


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` with ``metadata`` atomically: a half-written file never replaces a good one,
    and the result is never lost. The temporary file's name is short and fixed in length, so any
    name the file system takes for ``path`` works. When ``path`` cannot be written, the result is
    kept (beside it, or in the system's temporary folder) and :class:`SaveError` says where."""
    path = Path(path)
    token = uuid.uuid4().hex[:12]
    partial = path.with_name(f".{token}.partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
    except Exception as e:  # noqa: BLE001 (safetensors raises its own error type for I/O failures)
        if partial.parent.is_dir():
            partial.unlink(missing_ok=True)
        _keep_elsewhere(tensors, metadata, path, token, e)
    try:
        os.replace(partial, path)
    except OSError as e:
        raise SaveError(f"{path}: could not be written ({e.strerror or e}); the result is kept in {partial}: "
                        f"rename it to {path.name}") from None


def _keep_elsewhere(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path, token: str,
                    failure: Exception) -> None:
    """Write the result into the system's temporary folder and raise :class:`SaveError` naming it."""
    kept = Path(tempfile.gettempdir()) / f"prompt_edit_{token}.safetensors"
    try:
        save_file(tensors, str(kept), metadata=metadata)
    except Exception as e:  # noqa: BLE001
        raise SaveError(f"{path}: could not be written ({failure}), nor kept in {kept} ({e}); check the folder's "
                        "permissions and free space, and run again") from None
    raise SaveError(f"{path}: could not be written ({failure}); the result is kept in {kept}: move it to "
                    f"{path.parent} as {path.name} (check the folder's permissions and free space)")
