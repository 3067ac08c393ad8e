"""Prompt-to-Prompt on MMDiT models (Flux, SD3): the qk edit of Shin et al. (ICCV 2025), plain torch.

Flux and SD3 run one joint attention over ``[text (T), image (N)]`` tokens in every block. The qk
edit gives each edited item, for the first steps, the source item's (item 0's) image-token queries
and keys: the image→image block of the joint attention (the MMDiT's self-attention) becomes the
source's, so the layout is kept, while each edit keeps its own text tokens and values, so its prompt
still says what is drawn. It is the official code's ``qiki`` method (``exploring-mmdit``,
``utils/dit_utils.py``) with its defaults: the first 20 % of the steps (``DEFAULT_REPLACE_STEPS``),
every joint-attention block (``replace_blocks=None``), SD3.5's image-only second attention left as
it is, and only the conditional chunks edited (as Prompt-to-Prompt and the pack's UNet edit do).

The host hands :class:`QKEdit` each block call's facts (``transformer_options``, the text length and
the joint-attention length, whether the block is one the edit runs in and one whose word maps are
recorded) and gets back the options the block must run with: a copy that carries an attention
override where this call edits (:class:`QKOverride`) or records maps (a
:class:`~.mmdit_maps.MapRecordingOverride` around it). The override protocol is the host's
``optimized_attention_override(func, *args, **kwargs)``. The word maps (:mod:`.mmdit_maps`) feed
P2P Attention Maps and local blend, which works as on a UNet (:mod:`.local_blend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..patching.sampling_call import StepClock
from .attention_call import AttentionCall, run_call
from .edit_plan import blend_selectors
from .edit_spec import EDIT_KINDS, P2PEdit
from .errors import P2PInputError
from .local_blend import blend_from_store
from .map_store import AttentionMapStore
from .mmdit_blocks import BlockKey
from .mmdit_maps import ALL_COLUMNS, JOINT, MapRecordingOverride, MMDiTMapRecorder, PromptColumns
from .sampled_batch import batch_chunks
from .step_window import Window

QK_END_DEFAULT = 0.2
"""Fraction of steps with the qk edit: τ of Shin et al.'s Algorithm 1 (the official code's default)."""

QK_MECHANISM, PROBABILITIES_MECHANISM = "qk", "probabilities"
MMDIT_MECHANISMS = (QK_MECHANISM, PROBABILITIES_MECHANISM)
"""How P2P Attention Control edits Flux / SD3: the qk edit (this module), or Prompt-to-Prompt on
the image→text probabilities of the joint attention (:mod:`.mmdit_probabilities`)."""

MMDIT_EDIT_KIND = "replace"
"""The one ``edit`` value of P2P Attention Control that the qk edit honours: it needs no word alignment."""


@dataclass(frozen=True)
class QKSettings:
    """Which steps and blocks the qk edit runs in (by default every joint-attention block, as the
    paper does; ``blocks`` None = all)."""

    window: Window = Window(0.0, QK_END_DEFAULT)
    blocks: frozenset[BlockKey] | None = None


def check_mmdit_request(edit: P2PEdit, kind: str, word_windows: str, attention_path: str,
                        mechanism: str = QK_MECHANISM) -> None:
    """Refuse what P2P Attention Control offers on UNet models but the MMDiT edit cannot do on Flux /
    SD3: with the qk mechanism, every edit that works on the per-token attention probabilities of
    the text (refine, reweight, per-word windows)."""
    if kind not in EDIT_KINDS:
        raise P2PInputError(f"edit: {kind!r} is not one of {EDIT_KINDS}")
    if mechanism not in MMDIT_MECHANISMS:
        raise P2PInputError(f"mmdit_mechanism: {mechanism!r} is not one of {MMDIT_MECHANISMS}")
    if attention_path != "fast":
        raise P2PInputError(
            f"attention_path: {attention_path!r} exists for SD1.x, SD2.x and SDXL only (it materialises the "
            "UNet's attention maps); on Flux / SD3 leave it at 'fast'")
    if mechanism == PROBABILITIES_MECHANISM:
        return
    if kind != MMDIT_EDIT_KIND:
        why = ("reweighting scales the attention of single words"
               if kind == "reweight" else "refine aligns the attention of the prompts' words")
        raise P2PInputError(
            f"edit: {kind!r} is not available with mmdit_mechanism 'qk' ({why}; the qk edit replaces each edited "
            f"prompt's image queries and keys by the source's, whatever the words). Choose '{MMDIT_EDIT_KIND}': "
            f"it covers swapped and added words alike, or mmdit_mechanism '{PROBABILITIES_MECHANISM}'")
    if edit.reweights:
        raise P2PInputError(
            "p2p_edit: it carries a P2P Reweight, which the qk mechanism does not weight (it edits no "
            f"single words); set mmdit_mechanism to '{PROBABILITIES_MECHANISM}' or remove the P2P Reweight node")
    if word_windows.strip():
        raise P2PInputError(
            "word_windows: the qk mechanism edits no single words, so it has no per-word windows; clear it "
            f"(qk_end sets the steps) or set mmdit_mechanism to '{PROBABILITIES_MECHANISM}'")


def with_source_image_tokens(x: torch.Tensor, token_axis: int, text_length: int,
                             chunks: list[tuple[slice, bool]], image_length: int | None = None) -> torch.Tensor:
    """``x`` (q or k of a joint attention, batch first) where, in every conditional chunk, the edit
    rows' image tokens (``text_length:`` along ``token_axis``, the first ``image_length`` of them:
    reference tokens after the image, Flux.2's and Kontext's, are kept) are the chunk's first row's;
    the text tokens and the unconditional chunks are kept. ``x`` itself is not modified."""
    edited = [rows for rows, cond in chunks if cond and rows.stop - rows.start > 1]
    if not edited:
        return x
    out = x.clone()
    stop = None if image_length is None else text_length + image_length
    within = (slice(None),) * (token_axis - 1) + (slice(text_length, stop),)
    for rows in edited:
        out[(slice(rows.start + 1, rows.stop),) + within] = x[(slice(rows.start, rows.start + 1),) + within]
    return out


class QKOverride:
    """The attention override of one block call: the joint attention (``joint_length`` tokens, text
    first) with the source's image queries and keys on the edit rows; any other attention the block
    runs (SD3.5's image-only attn2, N tokens) unchanged. Calls the override it was layered on, or
    the host's attention function."""

    def __init__(self, edit: "QKEdit", text_length: int, joint_length: int, previous: Callable | None,
                 image_length: int | None = None):
        self.edit, self.text_length, self.joint_length, self.previous = edit, text_length, joint_length, previous
        self.image_length = image_length

    def __call__(self, func: Callable, *args: Any, **kwargs: Any) -> Any:
        call = AttentionCall.read(args, kwargs)
        if call is None:
            return run_call(func, args, kwargs, self.previous)
        if call.length == self.joint_length:
            chunks = self.edit.chunks(call.options, call.q.shape[0])
            if chunks:
                q, k = (with_source_image_tokens(x, call.token_axis, self.text_length, chunks, self.image_length)
                        for x in (call.q, call.k))
                call = call.with_tensors(q, k)
        return call.run(func, self.previous)


class QKEdit:
    """The qk edit of one P2P batch (item 0 = source), applied step by step to one sampling run at
    a time; it also records the prompts' word maps (``store``) and does the local blend."""

    def __init__(self, edit: P2PEdit, settings: QKSettings):
        self.edit = edit
        self.settings = settings
        self.recorder = MMDiTMapRecorder(edit)
        self.selectors = blend_selectors(edit) if edit.local_blend is not None else None
        self.clock = StepClock()
        self._text_length: int | None = None

    @property
    def block_text_length(self) -> int | None:
        """The text length of this run's last double block (what a single block's text is)."""
        return self._text_length

    @property
    def store(self) -> AttentionMapStore:
        """The word maps of the last sampling run (for P2P Attention Maps)."""
        return self.recorder.store

    def reset(self, grid: tuple[int, int] | None = None) -> None:
        """Forget everything about the previous sampling run; this one's image tokens lie on ``grid``."""
        self.clock.reset()
        self._text_length = None
        self.recorder.start_run(grid)

    def map_places(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        """A joint attention records every map in one place, whatever level was asked for (see :mod:`.edit_handle`)."""
        return (JOINT,)

    def edits_block(self, block: BlockKey) -> bool:
        return self.settings.blocks is None or block in self.settings.blocks

    def chunks(self, opts: dict, rows: int) -> list[tuple[slice, bool]] | None:
        """``(rows, conditional?)`` of each chunk of this call, or None outside sampling."""
        return batch_chunks(self.edit, opts, rows)

    def block_options(self, opts: dict, text_length: int | None, joint_length: int, edits: bool = True,
                      records: bool = False, layout: PromptColumns = ALL_COLUMNS) -> dict | None:
        """The ``transformer_options`` one block call must run with where it edits (``edits``: a
        block the edit runs in) or records word maps (``records``), a copy of ``opts`` with the
        overrides layered on the override already there, or None where it does neither.
        ``text_length`` is None in Flux's single blocks, whose input no longer tells text from image
        tokens: the last double block's text length is used (the host runs every double block
        before the single ones). ``layout``: where the prompts' columns lie among the text tokens
        (Flux.2 left-pads them, Z-Image pads its caption after them)."""
        if text_length is None:
            text_length = self._text_length
        else:
            self._text_length = text_length
        if text_length is None or joint_length <= text_length:
            return None
        position = self.clock.position(opts)
        if position is None:
            return None
        image_length = self.image_length(joint_length - text_length)
        override = previous = opts.get("optimized_attention_override")
        if edits:
            override = self.override(position, text_length, joint_length, previous, image_length=image_length,
                                     layout=layout) or previous
        if records and self.recorder.store.columns:  # outermost: it sees each prompt's own queries and keys, before the edit
            override = MapRecordingOverride(self.recorder, self.chunks, position, text_length, joint_length, override,
                                            layout)
        if override is previous:
            return None
        edited = dict(opts)  # a copy: the host shares one dict across blocks
        edited["optimized_attention_override"] = override
        return edited

    def image_length(self, tokens_after_text: int) -> int:
        """How many of the tokens after the text are this run's image (its grid); the rest are
        reference images' tokens (Flux.2, Kontext), which no edit touches."""
        grid = self.recorder.grid
        return tokens_after_text if grid is None else min(tokens_after_text, grid[0] * grid[1])

    def override(self, position: tuple[int, int], text_length: int, joint_length: int,
                 previous: Callable | None, image_length: int | None = None,
                 layout: PromptColumns = ALL_COLUMNS) -> Callable | None:
        """The attention override of a block call at step ``position``, or None where it does not edit
        (the qk edit takes every text token as it is, pads included: ``layout`` is unused)."""
        if not self.settings.window.active(*position):
            return None
        return QKOverride(self, text_length, joint_length, previous, image_length)

    def blend(self, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor,
              schedule: torch.Tensor | None) -> torch.Tensor:
        """Post-CFG hook: local blend of the denoised batch (item 0 = source) from the word maps."""
        position = self.clock.position({"sigmas": sigma, "sample_sigmas": schedule})
        return blend_from_store(self.edit.local_blend, self.store, self.selectors, x, denoised, sigma, schedule, position)
