"""Reading a safetensors file whole, with one clear error for every way it can be damaged."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open


def read_safetensors(path: str | Path, error: type[Exception], advice: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of ``path``; raises ``error`` naming the file and ``advice`` when it
    cannot be read (safetensors raises several exception types for a damaged file)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as e:  # noqa: BLE001
        raise error(f"{path}: not a readable safetensors file ({e}); {advice}") from None
