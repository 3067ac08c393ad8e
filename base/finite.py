"""Refusing NaN and infinity before they reach a sampler, a training loop or a file.

NaN compares false with everything, so a NaN passes every ``min <= x <= max`` check (ComfyUI's
widget limits included) and then silently removes an edit, blackens an image or is saved. Every
number and tensor a user can hand the pack is checked here, with a message that names the input.
"""

from __future__ import annotations

import math

import torch

from .errors import PromptEditError


class NonFiniteInputError(PromptEditError):
    """An input number or tensor holds NaN or infinity; the message names it and what to do."""


def check_finite_number(value: float, what: str, hint: str = "") -> float:
    """``value`` when finite, else a NonFiniteInputError naming ``what`` (e.g. "P2P Local Blend: threshold")
    and saying "give a finite number", followed by ``hint`` (e.g. " from 0.0 to 1.0")."""
    try:
        finite = isinstance(value, bool) or math.isfinite(float(value))
    except (TypeError, ValueError):
        return value  # not a number at all: the node's own checks say so
    if not finite:
        raise NonFiniteInputError(f"{what} is {value}; give a finite number{hint}")
    return value


def non_finite_count(tensor: torch.Tensor) -> int:
    """How many entries of ``tensor`` are NaN or ±infinity (0 for integer and bool tensors)."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    return int(tensor.numel() - torch.isfinite(tensor).sum())


def check_finite_tensor(tensor: torch.Tensor, what: str, fix: str) -> torch.Tensor:
    """``tensor`` when all its entries are finite, else a NonFiniteInputError naming ``what``, how many
    entries are bad and ``fix`` (what the user should do)."""
    bad = non_finite_count(tensor)
    if bad:
        raise NonFiniteInputError(f"{what}: {bad} of its {tensor.numel()} values are NaN or infinite; {fix}")
    return tensor
