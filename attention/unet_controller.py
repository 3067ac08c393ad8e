"""The Prompt-to-Prompt controller: what runs inside the UNet's attention layers.

Plain torch: the host hands each attention layer's projected ``q, k, v`` and a dict of per-call
facts (``cond_or_uncond``, ``sigmas``, ``sample_sigmas``, ``block``, ``block_index``, ``n_heads``,
``activations_shape``, or a video model's ``token_grid`` (frames, rows, columns)) and gets the
layer's output back. Only chunks of the conditional branch
(``cond_or_uncond == 0``) are edited, as Prompt-to-Prompt does; chunks are found through
``cond_or_uncond`` because the host may order or split them arbitrarily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..patching.sampling_call import StepClock
from .cross_step import CrossStep
from .edit_plan import EditPlan
from .edit_spec import P2PEdit
from .edited_attention import (
    attention_probs,
    column_probs,
    fast_cross_batch,
    fast_self_batch,
    folded_probs,
    plain_batch,
    reference_cross_attention,
    reference_self_attention,
    run_fused,
)
from .errors import P2PInputError
from .local_blend import blend_from_store
from .map_store import PLACES, AttentionMapStore
from .sampled_batch import batch_chunks

LayerKey = tuple[str, int, int]
# host attention: (q, k, v, heads, per-call options) -> output, all [B, N, heads·dim]
HostAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, dict], torch.Tensor]
PATHS = ("fast", "reference")


@dataclass(frozen=True)
class LayerLayout:
    """Where the model's attention layers sit: level = number of downsamplings above the latent."""

    levels: dict[LayerKey, int]

    @property
    def coarse_level(self) -> int:
        """The coarsest level outside the middle block (16×16 for a 512² SD1.5 image)."""
        outer = [lvl for key, lvl in self.levels.items() if key[0] != "middle"]
        return max(outer) if outer else max(self.levels.values())

    def self_injection_keys(self, which: str) -> set[LayerKey]:
        if which == "all":
            return set(self.levels)
        return {key for key, lvl in self.levels.items() if lvl >= self.coarse_level}


@dataclass
class _CallContext:
    step: int
    num_steps: int
    chunks: list[tuple[slice, bool]]  # rows of each chunk, and whether it is conditional

    @property
    def first_cond(self) -> slice | None:
        return next((rows for rows, cond in self.chunks if cond), None)


class P2PController:
    """Holds an :class:`EditPlan` and applies it, step by step, to one sampling run at a time."""

    def __init__(self, plan: EditPlan, layout: LayerLayout, attention: HostAttention, path: str = "fast",
                 map_columns: tuple[int, ...] | None = None):
        """``map_columns``: record the maps of these context columns only (a video model's, whose
        every-column maps grow with its tokens; ``()``: none), or of every column (None: the UNets')."""
        if path not in PATHS:
            raise P2PInputError(f"attention_path {path!r} is not one of {PATHS}")
        self.plan = plan
        self.layout = layout
        self.attention = attention
        self.path = path
        self.self_keys = layout.self_injection_keys(plan.settings.self_layers)
        self.store = AttentionMapStore(columns=map_columns)
        self._steps: dict[tuple, CrossStep] = {}
        self.clock = StepClock()

    @property
    def edit(self) -> P2PEdit:
        return self.plan.edit

    def reset(self) -> None:
        """Forget everything about the previous sampling run."""
        self.store.reset()
        self.clock.reset()

    def map_places(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        """The UNet records its maps by level: the requested places themselves (see :mod:`.edit_handle`)."""
        return requested

    # -- per-call bookkeeping ---------------------------------------------------------------

    def _step(self, opts: dict) -> tuple[int, int] | None:
        position = self.clock.position(opts)
        if position is not None:
            self.store.num_steps = position[1]
        return position

    def _context(self, opts: dict, rows: int) -> _CallContext | None:
        position = self._step(opts)
        chunks = batch_chunks(self.plan.edit, opts, rows) if position is not None else None
        if chunks is None:
            return None  # a direct model call (e.g. an inversion), not a sampling step
        return _CallContext(position[0], position[1], chunks)

    def _cross_step(self, step: int, num_steps: int, like: torch.Tensor) -> CrossStep:
        key = (step, num_steps, like.device, like.dtype)
        if key not in self._steps:
            self._steps[key] = self.plan.cross_step(step, num_steps).to(like.device, like.dtype)
        return self._steps[key]

    @staticmethod
    def _layer_key(opts: dict) -> LayerKey:
        block = opts["block"]
        return (block[0], int(block[1]), int(opts.get("block_index", 0)))

    def _run_fast(self, q, k, v, opts, ctx: _CallContext, edit_group) -> torch.Tensor:
        """All chunks in one fused kernel call: conditional chunks edited, the others as they are."""
        batches = [edit_group(q[rows], k[rows], v[rows]) if cond else plain_batch(q[rows], k[rows], v[rows])
                   for rows, cond in ctx.chunks]
        heads = opts["n_heads"]
        return run_fused(batches, lambda a, b, c: self.attention(a, b, c, heads, opts))

    def _run_reference(self, q, k, v, opts, ctx: _CallContext, edit_group) -> torch.Tensor:
        heads = opts["n_heads"]
        parts = [edit_group(q[rows], k[rows], v[rows]) if cond else self.attention(q[rows], k[rows], v[rows], heads, opts)
                 for rows, cond in ctx.chunks]
        return torch.cat(parts)

    # -- attention patches ------------------------------------------------------------------

    def edited_cross_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, opts: dict) -> torch.Tensor | None:
        """The edited output of a cross-attention call, or None where this call is not edited
        (no sampling step, no conditional rows, or outside every injection window); the maps of
        the coarse layers are recorded either way."""
        heads = opts["n_heads"]
        ctx = self._context(opts, q.shape[0])
        if ctx is None or ctx.first_cond is None:
            return None
        key = self._layer_key(opts)
        if key[0] in PLACES and self.layout.levels.get(key) == self.layout.coarse_level:
            # each prompt's own maps, before the edit, on purpose: the official code's store holds
            # the tensor its edit overwrites in place, so its local blend sees the injected maps
            self._record(q[ctx.first_cond], k[ctx.first_cond], heads, key[0], ctx.step, opts)
        step = self._cross_step(ctx.step, ctx.num_steps, q)
        if step.is_identity:
            return None
        if self.path == "fast":
            return self._run_fast(q, k, v, opts, ctx, lambda qg, kg, vg: fast_cross_batch(qg, kg, vg, step))
        return self._run_reference(q, k, v, opts, ctx, lambda qg, kg, vg: reference_cross_attention(qg, kg, vg, heads, step))

    def edited_self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, opts: dict) -> torch.Tensor | None:
        """The injected output of a self-attention call, or None where this call is not injected."""
        heads = opts["n_heads"]
        ctx = self._context(opts, q.shape[0])
        if (
            ctx is None
            or ctx.first_cond is None
            or self._layer_key(opts) not in self.self_keys
            or not self.plan.self_injection(ctx.step, ctx.num_steps)
        ):
            return None
        if self.path == "fast":
            return self._run_fast(q, k, v, opts, ctx, fast_self_batch)
        return self._run_reference(q, k, v, opts, ctx, lambda qg, kg, vg: reference_self_attention(qg, kg, vg, heads))

    def _record(self, q, k, heads: int, place: str, step: int, opts: dict) -> None:
        columns, n = self.store.columns, self.plan.edit.num_columns
        if columns is None:
            probs = folded_probs(attention_probs(q, k, heads), n).mean(1)
        elif columns:
            probs = column_probs(q, k, heads, n, columns)
        else:
            return  # no column worth a map
        # a video model's tokens are frames × rows × columns (its host says so as "token_grid")
        grid = opts.get("token_grid") or opts["activations_shape"][-2:]
        self.store.add(step, place, probs, tuple(int(n) for n in grid))

    # -- local blend --------------------------------------------------------------------------

    def blend(self, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, schedule: torch.Tensor | None) -> torch.Tensor:
        """Post-CFG hook: local blend of the denoised batch (item 0 = source)."""
        position = self._step({"sigmas": sigma, "sample_sigmas": schedule})
        return blend_from_store(self.plan.edit.local_blend, self.store, self.plan.blend_selectors, x, denoised, sigma,
                                schedule, position)
