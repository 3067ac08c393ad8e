"""Safetensors files: written atomically, read whole with one clear error for every way a file can
be damaged."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def read_safetensors(path: str | Path, error: type[Exception], advice: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of ``path``; raises ``error`` naming the file and ``advice`` when it
    cannot be read (safetensors raises several exception types for a damaged file)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as e:  # noqa: BLE001
        raise error(f"{path}: not a readable safetensors file ({e}); {advice}") from None


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` with ``metadata`` atomically: a half-written file never replaces a good one."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
