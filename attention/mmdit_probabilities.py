"""Prompt-to-Prompt on the probabilities of MMDiT models' joint attention (Flux, SD3), plain torch.

The joint attention of a block runs one softmax over ``[text (T), image (N)]`` keys. Its
image→text block (image queries, text keys: ``P[T:, :T]``) is the MMDiT's cross-attention, so the
UNet edit applies to it as it is (see :mod:`.edit_plan`), per edited item ``e`` and text column ``j``:

    P_e[T:, j] ← c_src[j] · (P_source[T:, :T] @ A_e)[:, j] + c_own[j] · P_e[T:, j]

(replace: ``A`` = replacement mapper; refine: alignment; reweight: ``c`` scales a word's column).
The image→image block and the text rows are the item's own. The probabilities are materialised
only for the image rows of the edited items and their source, ``row_chunk`` rows at a time, so the
memory stays bounded whatever the image size; the other rows keep the host's attention output.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .cross_step import CrossStep
from .edit_plan import EditPlan
from .errors import P2PInputError
from .mmdit_edit import QKEdit, QKSettings
from .attention_call import AttentionCall, run_call
from .mmdit_maps import ALL_COLUMNS, PromptColumns

ROW_BUDGET = 1 << 24
"""Probabilities materialised at once per item (heads × rows × keys): 64 MiB in fp32."""


def edited_probabilities(p_source: torch.Tensor, p_edit: torch.Tensor, text_length: int,
                         mapper: torch.Tensor, c_src: torch.Tensor, c_own: torch.Tensor) -> torch.Tensor:
    """``p_edit`` (``[..., rows, T + N]``, softmax rows of image queries) with its text columns
    edited from the source's rows ``p_source`` (same shape): the formula of the module docstring."""
    text = p_source[..., :text_length] @ mapper * c_src + p_edit[..., :text_length] * c_own
    return torch.cat([text, p_edit[..., text_length:]], dim=-1)


def edited_image_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text_length: int,
                      rows: slice, step: CrossStep, row_chunk: int | None = None,
                      image_length: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The attention output ``[E, H, N, D]`` of the image queries of the edited items of one chunk
    (``rows``: the source, then its edits) with the edited image→text probabilities;
    q, k, v are ``[B, H, L, D]``; ``image_length``: the first N queries after the text (the
    reference tokens after them keep the host's output); ``mask``: the call's 4-D mask (additive,
    or boolean: True attends)."""
    heads, dim = q.shape[1], q.shape[3]
    length = q.shape[2] if image_length is None else text_length + image_length
    src = rows.start
    edits = range(rows.start + 1, rows.stop)
    chunk = row_chunk or max(1, ROW_BUDGET // (heads * k.shape[2]))
    scale = dim ** -0.5
    out = q.new_empty(len(edits), heads, length - text_length, v.shape[-1])
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, device=q.device).masked_fill(~mask, float("-inf"))
    step = step.to(q.device, torch.float32)

    def probabilities(item: int, start: int, stop: int) -> torch.Tensor:
        scores = (q[item, :, start:stop].float() @ k[item].float().transpose(-1, -2)) * scale  # every key
        if mask is not None:  # [B | 1, H | 1, L | 1, L]
            m = mask[item if mask.shape[0] > 1 else 0]
            scores = scores + (m[:, start:stop] if m.shape[-2] > 1 else m).float()
        return scores.softmax(dim=-1)

    for start in range(text_length, length, chunk):
        stop = min(start + chunk, length)
        p_source = probabilities(src, start, stop)
        for e, item in enumerate(edits):
            p = edited_probabilities(p_source, probabilities(item, start, stop), text_length,
                                     step.mapper[e], step.c_src[e], step.c_own[e])
            out[e, :, start - text_length: stop - text_length] = (p @ v[item].float()).to(out.dtype)
    return out


def with_pad_columns(step: CrossStep, before: int, after: int) -> CrossStep:
    """``step`` over a text the model padded with ``before`` columns ahead of the prompts' (Flux.2
    left-pads its context) and ``after`` columns behind them (Z-Image pads its caption): each pad
    maps to itself with the coefficients of the nearest prompt column (a template, start or end
    token, never a word), as the columns outside the words follow the source in Prompt-to-Prompt."""
    if before == after == 0:
        return step
    edits, n = step.mapper.shape[0], step.mapper.shape[-1]
    total = before + n + after
    mapper = torch.eye(total, dtype=step.mapper.dtype, device=step.mapper.device).repeat(edits, 1, 1)
    mapper[:, before:before + n, before:before + n] = step.mapper

    def widen(c: torch.Tensor) -> torch.Tensor:
        return torch.cat([c[:, :1].expand(edits, before), c, c[:, -1:].expand(edits, after)], dim=1)

    return CrossStep(mapper, widen(step.c_src), widen(step.c_own), step.use_src, step.use_own, step.is_identity)


class ProbabilitiesOverride:
    """The attention override of one block call: the joint attention (``joint_length`` tokens,
    text first) computed by the host (or the override it was layered on), then the edited items'
    image rows replaced by :func:`edited_image_rows`; any other attention (SD3.5's image-only
    attn2) unchanged."""

    def __init__(self, chunks_of: Callable[[dict, int], list[tuple[slice, bool]] | None], step: CrossStep,
                 text_length: int, joint_length: int, previous: Callable | None, image_length: int | None = None,
                 layout: PromptColumns = ALL_COLUMNS):
        self.chunks_of, self.step = chunks_of, step
        self.text_length, self.joint_length, self.previous = text_length, joint_length, previous
        self.image_length = joint_length - text_length if image_length is None else image_length
        self.prompt_columns = layout.span(text_length)
        self.padded_step = with_pad_columns(step, layout.offset, text_length - layout.offset - self.prompt_columns)

    def __call__(self, func: Callable, *args: Any, **kwargs: Any) -> Any:
        call = AttentionCall.read(args, kwargs)
        if call is None:
            return run_call(func, args, kwargs, self.previous)
        out = call.run(func, self.previous)
        if call.length != self.joint_length:
            return out  # not the joint attention
        q, k, v = (call.heads_first(x) for x in (call.q, call.k, call.v))
        chunks = self.chunks_of(call.options, q.shape[0])
        edited = [rows for rows, cond in (chunks or ()) if cond and rows.stop - rows.start > 1]
        if not edited:
            return out
        if self.step.mapper.shape[-1] != self.prompt_columns:
            raise P2PInputError(
                f"Prompt-to-Prompt: the model's text has {self.prompt_columns} tokens but the P2P prompts "
                f"{self.step.mapper.shape[-1]} columns; connect the model's own text encoder to 'P2P Prompts'")
        out = out.clone()
        heads_out = call.output_token_axis == 2
        mask = call.mask_4d()
        for rows in edited:
            image = edited_image_rows(q, k, v, self.text_length, rows, self.padded_step, image_length=self.image_length,
                                      mask=mask)
            items = slice(rows.start + 1, rows.stop)
            tokens = slice(self.text_length, self.text_length + self.image_length)
            if heads_out:  # [B, H, L, D]
                out[items, :, tokens] = image.to(out.dtype)
            else:  # [B, L, H·D]
                out[items, tokens] = image.transpose(1, 2).flatten(2).to(out.dtype)
        return out


class ProbabilitiesEdit(QKEdit):
    """Prompt-to-Prompt on the image→text probabilities of one P2P batch (item 0 = source): the
    plan's coefficients of each step (its cross-attention window, edit kind and reweights), in
    every joint-attention block; a step whose coefficients leave every edit its own attention
    runs the host's attention untouched."""

    def __init__(self, plan: EditPlan, blocks: frozenset | None = None):
        super().__init__(plan.edit, QKSettings(blocks=blocks))
        self.plan = plan

    def override(self, position: tuple[int, int], text_length: int, joint_length: int,
                 previous: Callable | None, image_length: int | None = None,
                 layout: PromptColumns = ALL_COLUMNS) -> Callable | None:
        step = self.plan.cross_step(*position)
        if step.is_identity:
            return None
        return ProbabilitiesOverride(self.chunks, step, text_length, joint_length, previous, image_length, layout)
