"""Cross-attention maps kept during sampling, for local blend and for visualisation.

Only the conditional branch's maps at the coarse level (16×16 for a 512² SD1.5 image, the level
Prompt-to-Prompt blends and shows) are kept: averaged over heads, summed over layers, one
``[B, H·W, N]`` accumulator per (step, place) where place is ``input`` or ``output`` (an MMDiT's
are ``joint``, and hold only the ``columns`` worth a map: :mod:`.mmdit_maps`; Wan's too, as its
every-column maps would grow with the video's tokens: ``column_probs`` in :mod:`.edited_attention`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from ..base.errors import PromptEditError
from .step_window import step_of

PLACES = ("input", "output")


@dataclass
class AttentionMapStore:
    per_step: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    layer_counts: dict[tuple[int, str], int] = field(default_factory=dict)
    running: torch.Tensor | None = None  # sum over everything so far (local blend)
    spatial: tuple[int, ...] | None = None  # (H, W), or a video's (frames, H, W)
    num_steps: int = 0
    columns: tuple[int, ...] | None = None  # the context column of each map; None: every column
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def column_index(self, columns: list[int]) -> list[int]:
        """Where the maps of context ``columns`` lie along the maps' last axis."""
        if self.columns is None:
            return list(columns)
        where = {c: i for i, c in enumerate(self.columns)}
        return [where[c] for c in columns]

    def reset(self) -> None:
        self.per_step.clear()
        self.layer_counts.clear()
        self.running = None
        self.spatial = None
        self.num_steps = 0

    def add(self, step: int, place: str, maps: torch.Tensor, spatial: tuple[int, ...]) -> None:
        """Add head-averaged probabilities ``[B, H·W, N]`` of one layer. Safe from several threads
        (ComfyUI's MultiGPU CFG Split runs cond entries on several devices at once): the maps
        are kept on the device of the first ones."""
        maps = maps.detach().float()
        key = (step, place)
        with self._lock:
            if self.running is not None:
                maps = maps.to(self.running.device)
            self.per_step[key] = self.per_step[key] + maps if key in self.per_step else maps
            self.layer_counts[key] = self.layer_counts.get(key, 0) + 1
            self.running = maps.clone() if self.running is None else self.running + maps
            self.spatial = spatial

    @property
    def empty(self) -> bool:
        return self.running is None

    def average(self, places: tuple[str, ...] = PLACES, start: float = 0.0, end: float = 1.0) -> torch.Tensor:
        """Mean map ``[B, H, W, N]`` over the layers of ``places`` and the steps in ``[start, end)``."""
        if self.empty:
            raise PromptEditError("no attention maps were recorded: run a sampler with the patched model first")
        n = max(self.num_steps, 1 + max(s for s, _ in self.per_step))
        lo = step_of(start, n)
        hi = max(step_of(end, n), lo + 1)
        keys = [k for k in self.per_step if k[1] in places and lo <= k[0] < hi]
        if not keys:
            raise PromptEditError(f"no maps recorded for places {places} in steps {lo}..{hi - 1} of {n}")
        total = sum(self.per_step[k] for k in keys)
        count = sum(self.layer_counts[k] for k in keys)
        return (total / count).unflatten(1, self.spatial)  # a video's: [B, F, H, W, N]
