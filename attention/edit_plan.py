"""An edit's plan: everything the controller needs, computed once before sampling.

Every edit of the edited branch's cross-attention probabilities has the same form (per target
column ``j``, ``α_t`` = 1 inside the injection window of step ``t``, else 0):

    M_new[:, j] = c_src[j] · (M_source @ A)[:, j] + c_own[j] · M_edit[:, j]

* replace:  ``A`` = replacement mapper, ``c_src = α_t·w``,          ``c_own = 1 − α_t``
* refine:   ``A`` = alignment matrix,   ``c_src = α_t·α·w``,        ``c_own = α_t·(1−α)·w + 1 − α_t``
  (``α`` = 1 for aligned target tokens, 0 for added ones)
* reweight: ``w`` = per-column weights (1 where not reweighted); alone it uses ``A = I``.

These are Prompt-to-Prompt's ``AttentionReplace``/``AttentionRefine``/``AttentionReweight`` (with
``prev_controller`` chaining) followed by its ``alpha_words`` blend, except where ``α_t`` switches
(see :mod:`.step_window`); :mod:`.edited_attention` applies them either on probabilities
(reference) or on values (fast).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .cross_step import CrossStep
from .edit_spec import ControlSettings, P2PEdit
from .errors import P2PInputError
from .seq_aligner import AlignmentError, index_to_matrix, refinement_alignment, replacement_mapper
from .step_window import Window


@dataclass
class EditPlan:
    """Static per-edit tensors of an edit; :meth:`cross_step` turns them into one step's coefficients."""

    edit: P2PEdit
    settings: ControlSettings
    mapper: torch.Tensor  # [E, N, N]
    alpha: torch.Tensor  # [E, N] refinement alpha (ones for replace / reweight)
    weights: torch.Tensor  # [E, N]
    column_windows: list[list[Window]] = field(default_factory=list)  # [E][N]
    blend_selectors: torch.Tensor | None = None  # [B, N] local blend's words (None: no local blend)

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


def align_plan(edit: P2PEdit, settings: ControlSettings) -> EditPlan:
    """Align every edited prompt with the source and lay out the per-column tensors (the columns
    of the prompts' context: CLIP's, or on Flux / SD3 T5's, SD3's CLIP-L‖G's then T5's)."""
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
            for cols in target.find(words):
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
    return EditPlan(
        edit, settings, torch.stack(mappers), torch.stack(alphas), torch.stack(weights), windows,
        blend_selectors(edit) if edit.local_blend is not None else None,
    )


def blend_selectors(edit: P2PEdit) -> torch.Tensor:
    """``[B, N]`` 0/1 selectors: source words on item 0, target words on each edited item."""
    blend = edit.local_blend
    sel = torch.zeros(edit.batch_size, edit.num_columns)
    for words in blend.source_words:
        for cols in edit.source.find(words):
            sel[0, list(cols)] = 1
    for i, target in enumerate(edit.targets, 1):
        for words in blend.target_words:
            for cols in target.find(words):
                sel[i, list(cols)] = 1
    return sel
