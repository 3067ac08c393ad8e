"""What a Prompt-to-Prompt edit asks for, and its per-step coefficients.

Every edit of the edited branch's cross-attention probabilities has the same form (per target
column ``j``, ``α_t`` = 1 inside the injection window of step ``t``, else 0):

    M_new[:, j] = c_src[j] · (M_source @ A)[:, j] + c_own[j] · M_edit[:, j]

* replace:  ``A`` = replacement mapper, ``c_src = α_t·w``,          ``c_own = 1 − α_t``
* refine:   ``A`` = alignment matrix,   ``c_src = α_t·α·w``,        ``c_own = α_t·(1−α)·w + 1 − α_t``
  (``α`` = 1 for aligned target tokens, 0 for added ones)
* reweight: ``w`` = per-column weights (1 where not reweighted); alone it uses ``A = I``.

This is exactly Prompt-to-Prompt's ``AttentionReplace``/``AttentionRefine``/``AttentionReweight``
(with ``prev_controller`` chaining) followed by its ``alpha_words`` blend, written so that
:mod:`.edited_attention` can apply it either on probabilities (reference) or on values (fast).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from .seq_aligner import AlignmentError, index_to_matrix, refinement_alignment, replacement_mapper
from .tokens import PromptTokens

EDIT_KINDS = ("replace", "refine", "reweight")
SELF_ATTENTION_LAYERS = ("coarse", "all")


class P2PInputError(ValueError):
    """A user input of a Prompt-to-Prompt node is wrong; the message names it and the fix."""


@dataclass(frozen=True)
class Reweight:
    words: tuple[str, ...]  # one CLIP word sequence, e.g. ("teddy", "bear")
    weight: float


@dataclass(frozen=True)
class LocalBlend:
    source_words: tuple[tuple[str, ...], ...]
    target_words: tuple[tuple[str, ...], ...]
    threshold: float = 0.3
    start: float = 0.2  # fraction of steps before blending starts


def step_of(fraction: float, num_steps: int) -> int:
    """The step at ``fraction`` of the schedule, floored with slack (0.29 · 100 must give 29)."""
    return int(fraction * num_steps + 1e-6)


@dataclass(frozen=True)
class Window:
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise P2PInputError(f"step window {self.start}-{self.end} must satisfy 0 <= start <= end <= 1")

    def active(self, step: int, num_steps: int) -> bool:
        return step_of(self.start, num_steps) <= step < step_of(self.end, num_steps)


@dataclass(frozen=True)
class P2PEdit:
    """The prompts of one Prompt-to-Prompt batch (item 0 = source) and the edits asked for."""

    source: PromptTokens
    targets: tuple[PromptTokens, ...]
    reweights: tuple[Reweight, ...] = ()
    local_blend: LocalBlend | None = None

    @property
    def batch_size(self) -> int:
        return 1 + len(self.targets)

    @property
    def num_columns(self) -> int:
        return self.source.num_columns

    def with_reweight(self, reweight: Reweight) -> "P2PEdit":
        if not any(t.find(reweight.words) for t in self.targets):
            raise P2PInputError(
                f"reweight word {' '.join(reweight.words)!r} is not in any edited prompt "
                f"({'; '.join(repr(t.text) for t in self.targets)}); pick a word of an edited prompt"
            )
        return replace(self, reweights=self.reweights + (reweight,))

    def with_local_blend(self, blend: LocalBlend) -> "P2PEdit":
        for words in blend.source_words:
            if not self.source.find(words):
                raise P2PInputError(
                    f"local blend source word {' '.join(words)!r} is not in the source prompt "
                    f"{self.source.text!r}"
                )
        for i, target in enumerate(self.targets, 1):
            if blend.target_words and not any(target.find(w) for w in blend.target_words):
                raise P2PInputError(
                    f"none of the local blend target words {[' '.join(w) for w in blend.target_words]} "
                    f"is in edited prompt {i} ({target.text!r}); list a word of each edited prompt"
                )
        return replace(self, local_blend=blend)


@dataclass(frozen=True)
class ControlSettings:
    """The attention-control node's settings."""

    kind: str = "replace"
    cross_window: Window = Window(0.0, 0.8)
    word_windows: tuple[tuple[tuple[str, ...], Window], ...] = ()
    self_window: Window = Window(0.0, 0.4)
    self_layers: str = "coarse"

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise P2PInputError(f"edit kind {self.kind!r} is not one of {EDIT_KINDS}")
        if self.self_layers not in SELF_ATTENTION_LAYERS:
            raise P2PInputError(f"self_attention_layers {self.self_layers!r} is not one of {SELF_ATTENTION_LAYERS}")


@dataclass
class CrossStep:
    """Coefficients of one sampling step, for edits ``1..E`` (rows) over conditioning columns.

    The flags are computed once on the CPU so the attention patch never waits on the GPU.
    """

    mapper: torch.Tensor  # [E, N, N]
    c_src: torch.Tensor  # [E, N]
    c_own: torch.Tensor  # [E, N]
    use_src: bool
    use_own: bool
    is_identity: bool  # nothing to do: every edited branch keeps its own attention

    def to(self, device: torch.device, dtype: torch.dtype) -> "CrossStep":
        return CrossStep(
            self.mapper.to(device, dtype), self.c_src.to(device, dtype), self.c_own.to(device, dtype),
            self.use_src, self.use_own, self.is_identity,
        )


@dataclass
class EditPlan:
    """Static per-edit tensors of an edit; :meth:`cross_step` turns them into one step's coefficients."""

    edit: P2PEdit
    settings: ControlSettings
    mapper: torch.Tensor  # [E, N, N]
    alpha: torch.Tensor  # [E, N] refinement alpha (ones for replace / reweight)
    weights: torch.Tensor  # [E, N]
    column_windows: list[list[Window]] = field(default_factory=list)  # [E][N]

    def cross_step(self, step: int, num_steps: int) -> CrossStep:
        active = torch.tensor(
            [[1.0 if w.active(step, num_steps) else 0.0 for w in row] for row in self.column_windows]
        )
        c_src = active * self.alpha * self.weights
        c_own = active * (1 - self.alpha) * self.weights + (1 - active)
        use_src = bool(c_src.any())
        return CrossStep(self.mapper, c_src, c_own, use_src, bool(c_own.any()), not use_src and bool((c_own == 1).all()))

    def self_injection(self, step: int, num_steps: int) -> bool:
        return self.settings.self_window.active(step, num_steps)


def build_plan(edit: P2PEdit, settings: ControlSettings) -> EditPlan:
    """Align every edited prompt with the source and lay out the per-column tensors."""
    n = edit.num_columns
    mappers, alphas, weights, windows = [], [], [], []
    for i, target in enumerate(edit.targets, 1):
        try:
            if settings.kind == "replace":
                mapper, alpha = replacement_mapper(edit.source, target), torch.ones(n)
            elif settings.kind == "refine":
                index, alpha = refinement_alignment(edit.source, target)
                mapper = index_to_matrix(index, alpha, n)
                alpha = alpha.clone()
            else:
                if target.token_strings != edit.source.token_strings:
                    raise P2PInputError(
                        f"edited prompt {i} ({target.text!r}) differs from the source "
                        f"({edit.source.text!r}); a reweight-only edit keeps the prompt. Choose "
                        "'replace' or 'refine' as the edit, and chain the reweight onto it."
                    )
                mapper, alpha = torch.eye(n), torch.ones(n)
        except AlignmentError as e:
            raise P2PInputError(f"{settings.kind} edit, prompt {i}: {e}") from None
        w = torch.ones(n)
        for rw in edit.reweights:
            for cols in target.find(rw.words):
                w[list(cols)] = rw.weight
        row = [settings.cross_window] * n
        for words, window in settings.word_windows:
            hits = target.find(words)
            for cols in hits:
                for c in cols:
                    row[c] = window
        mappers.append(mapper)
        alphas.append(alpha)
        weights.append(w)
        windows.append(row)
    for words, _ in settings.word_windows:
        if not any(t.find(words) for t in edit.targets):
            raise P2PInputError(
                f"word_windows names {' '.join(words)!r}, which is in no edited prompt; "
                "use words of the edited prompts"
            )
    return EditPlan(edit, settings, torch.stack(mappers), torch.stack(alphas), torch.stack(weights), windows)


def blend_word_selectors(edit: P2PEdit) -> torch.Tensor:
    """``[B, N]`` 0/1 selectors: source words on item 0, target words on each edited item."""
    blend = edit.local_blend
    assert blend is not None
    sel = torch.zeros(edit.batch_size, edit.num_columns)
    for words in blend.source_words:
        for cols in edit.source.find(words):
            sel[0, list(cols)] = 1
    for i, target in enumerate(edit.targets, 1):
        for words in blend.target_words:
            for cols in target.find(words):
                sel[i, list(cols)] = 1
    return sel


def parse_word_windows(spec: str, tokenize_words) -> tuple[tuple[tuple[str, ...], Window], ...]:
    """Parse per-word injection windows, one per line or comma: ``word=end`` or ``word=start-end``.

    ``tokenize_words`` turns a word string into its CLIP word sequence.
    """
    out = []
    for entry in spec.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        if "=" not in entry:
            raise P2PInputError(f"word_windows entry {entry!r} must look like 'word=0.4' or 'word=0.1-0.6'")
        word, bounds = (s.strip() for s in entry.rsplit("=", 1))
        try:
            parts = [float(b) for b in bounds.split("-")] if "-" in bounds.strip("-") else [0.0, float(bounds)]
        except ValueError:
            raise P2PInputError(f"word_windows entry {entry!r}: {bounds!r} is not a fraction or 'start-end'") from None
        if len(parts) != 2:
            raise P2PInputError(f"word_windows entry {entry!r}: give one end fraction or 'start-end'")
        words = tuple(tokenize_words(word))
        if not words:
            raise P2PInputError(f"word_windows entry {entry!r} names no word")
        try:
            window = Window(*parts)
        except P2PInputError as e:
            raise P2PInputError(f"word_windows entry {entry!r}: {e}") from None
        out.append((words, window))
    return tuple(out)


def checked_words(entries: Sequence[str], tokenize_words, what: str) -> tuple[tuple[str, ...], ...]:
    words = tuple(tuple(tokenize_words(e)) for e in entries)
    if any(not w for w in words):
        raise P2PInputError(f"{what}: an entry has no text tokens")
    return words
