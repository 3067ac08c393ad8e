"""Word attention maps of an MMDiT (Flux, SD3), for local blend and for P2P Attention Maps (plain torch).

An MMDiT's cross-attention is the image→text block of its joint attention: the probabilities of
the image queries over the text keys, normalised over *all* keys ``[text (T), image (N)]``. Only a
few text columns are wanted (the prompts' words and special tokens), so they are read without
materialising the N × (T + N) probabilities: attention with one-hot values (1 at a wanted text
column, 0 elsewhere, image keys included) outputs exactly those columns' probabilities, through
the fused kernel. The maps are recorded in the double (Flux) / joint (SD3) blocks, where text and
image streams are kept apart, averaged over heads, each prompt's own (before an edit changes its
attention), as the UNet's coarse cross-attention maps are (see :mod:`.map_store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .attention_call import AttentionCall, run_call
from .edit_spec import P2PEdit
from .errors import P2PInputError
from .map_store import AttentionMapStore

JOINT = "joint"
"""The map store's place for an MMDiT's joint-attention blocks (the UNet's are input / output)."""


@dataclass(frozen=True)
class PromptColumns:
    """Where the P2P prompts' columns lie among a joint attention's ``T`` text tokens: from
    ``offset`` (a model that left-pads its context puts its pads first: Flux.2), ``count`` of them
    (None: all the rest; fewer where the model pads its caption after them: Z-Image). The host may
    repeat a shorter context to a common multiple: the span then holds the repeats."""

    offset: int = 0
    count: int | None = None

    def span(self, text_length: int) -> int:
        """How many of the text tokens are the prompts' columns (their repeats included)."""
        return text_length - self.offset if self.count is None else self.count


ALL_COLUMNS = PromptColumns()


def recorded_columns(edit: P2PEdit) -> tuple[int, ...]:
    """The context columns worth a map: every prompt's words and its start / end tokens."""
    columns = set()
    for prompt in (edit.source, *edit.targets):
        columns.update(c for word in prompt.words for c in word.columns)
        columns.update(prompt.start_end_columns())
    return tuple(sorted(columns))


def one_hot_values(columns: tuple[int, ...], num_columns: int, text_length: int, joint_length: int,
                   device: torch.device, dtype: torch.dtype, layout: PromptColumns = ALL_COLUMNS) -> torch.Tensor:
    """``[joint_length, C]`` values whose attention output is the probability of each of
    ``columns``: 1 at the column in every repeat of the prompts' ``num_columns`` (the host repeats
    a shorter context to a common multiple; the repeats' probabilities add up), 0 elsewhere;
    ``layout``: where the prompts' columns lie among the text tokens."""
    span = layout.span(text_length)
    if span % num_columns:
        raise P2PInputError(
            f"Prompt-to-Prompt: the model's text has {span} tokens, not a multiple of the P2P prompts' "
            f"{num_columns} columns; feed the CONDITIONING of the same 'P2P Prompts' node to the sampler")
    values = torch.zeros(joint_length, len(columns), device=device, dtype=dtype)
    index = torch.arange(len(columns), device=device)
    for repeat in range(layout.offset, layout.offset + span, num_columns):
        values[torch.tensor(columns, device=device) + repeat, index] = 1
    return values


def image_text_probabilities(q: torch.Tensor, k: torch.Tensor, values: torch.Tensor, text_length: int,
                             mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, N, C]``: the head-averaged probability of each image query (q, k: ``[B, H, L, D]``, text
    first) on the columns of ``values`` (:func:`one_hot_values`)."""
    image_queries = q[:, :, text_length:]
    if mask is not None and mask.shape[-2] == q.shape[2]:
        mask = mask[..., text_length:, :]
    if mask is not None and mask.is_floating_point():
        mask = mask.to(q.dtype)  # the fused kernel takes an additive mask of the queries' dtype
    v = values.to(q.dtype).expand(q.shape[0], q.shape[1], *values.shape)
    return F.scaled_dot_product_attention(image_queries, k, v, attn_mask=mask).float().mean(1)


class MMDiTMapRecorder:
    """Keeps each sampling step's word maps of one P2P batch in an :class:`AttentionMapStore`
    (``store.columns`` says which context column each map is)."""

    def __init__(self, edit: P2PEdit):
        self.edit = edit
        self.store = AttentionMapStore(columns=recorded_columns(edit))
        self.grid: tuple[int, int] | None = None  # image tokens (rows, columns); set per sampling run
        self._values: dict[tuple, torch.Tensor] = {}

    def start_run(self, grid: tuple[int, int]) -> None:
        """Forget the previous run; this one's image tokens lie on ``grid`` (row-major)."""
        self.store.reset()
        self.grid = grid

    def record(self, q: torch.Tensor, k: torch.Tensor, rows: slice, text_length: int, step: int, num_steps: int,
               mask: torch.Tensor | None = None, layout: PromptColumns = ALL_COLUMNS) -> None:
        """Add the maps of one block's joint attention (q, k: ``[B, H, L, D]``) for the batch items ``rows``."""
        if self.grid is None or not self.store.columns:
            return
        tokens = self.grid[0] * self.grid[1]
        if q.shape[2] - text_length < tokens:
            return  # not this run's image (cannot happen through the stock samplers)
        key = (text_length, layout, q.shape[2], q.device, q.dtype)
        if key not in self._values:
            self._values[key] = one_hot_values(self.store.columns, self.edit.num_columns, text_length, q.shape[2],
                                               q.device, q.dtype, layout)
        if mask is not None and mask.shape[0] == q.shape[0]:
            mask = mask[rows]
        maps = image_text_probabilities(q[rows], k[rows], self._values[key], text_length, mask)
        self.store.num_steps = num_steps
        self.store.add(step, JOINT, maps[:, :tokens], self.grid)  # Kontext's reference tokens, Z-Image's pads follow


class MapRecordingOverride:
    """The attention override of one block call that records the word maps of its joint attention
    (``joint_length`` tokens, text first) for the first conditional chunk, then runs the override it
    was layered on (an edit's, another node's) or the host's attention; any other attention
    (SD3.5's image-only attn2) only runs."""

    def __init__(self, recorder: MMDiTMapRecorder, chunks_of: Callable[[dict, int], list[tuple[slice, bool]] | None],
                 position: tuple[int, int], text_length: int, joint_length: int, previous: Callable | None,
                 layout: PromptColumns = ALL_COLUMNS):
        self.recorder, self.chunks_of, self.position = recorder, chunks_of, position
        self.text_length, self.joint_length, self.previous = text_length, joint_length, previous
        self.layout = layout

    def __call__(self, func: Callable, *args: Any, **kwargs: Any) -> Any:
        call = AttentionCall.read(args, kwargs)
        if call is None:
            return run_call(func, args, kwargs, self.previous)
        if call.length == self.joint_length:
            chunks = self.chunks_of(call.options, call.q.shape[0]) or ()
            rows = next((r for r, cond in chunks if cond), None)
            if rows is not None:
                self.recorder.record(call.heads_first(call.q), call.heads_first(call.k), rows, self.text_length,
                                     *self.position, mask=call.mask_4d(), layout=self.layout)
        return call.run(func, self.previous)
