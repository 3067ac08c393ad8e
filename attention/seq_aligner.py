"""Token alignments between a source prompt and an edited prompt.

* :func:`replacement_mapper` (word swap): a matrix ``A`` with ``M_edit = M_source @ A``. Unchanged
  words map one to one. A swapped span of as many words on both sides is mapped word by word, as
  Prompt-to-Prompt does: a word's tokens map one to one where both words have as many tokens, else
  every source token to every target token of its word with weight ``1 / len(target word)``. A span
  whose word counts differ (which Prompt-to-Prompt refuses) is pooled the same way as one block, so
  "rabbit" → "teddy bear" shares rabbit's attention between both words.
* :func:`refinement_alignment` (added words): a global sequence alignment (Needleman–Wunsch,
  match +1, mismatch −1, gap 0, as Prompt-to-Prompt's ``seq_aligner``); every target column gets the
  source column it aligns to, and ``alpha = 0`` where it aligns to nothing (a new word).

Both work over the full conditioning width (77·k columns), so long prompts are covered; the
special columns (start, end, padding) of chunk ``c`` are aligned with those of chunk ``c``. A T5
context (Flux) is one chunk of its own length. A context joined from several encoders (SD3: CLIP-L‖G,
then T5) is aligned part by part: its mapper is block-diagonal, no column maps into another part.
"""

from __future__ import annotations

import difflib

import numpy as np
import torch

from ..base.errors import PromptEditError
from .tokens import END, PAD, START, PromptTokens


class AlignmentError(PromptEditError):
    """The two prompts cannot be aligned the way the chosen edit needs."""


def _word_spans(prompt: PromptTokens) -> tuple[list[str], list[tuple[int, ...]]]:
    return [w.text for w in prompt.words], [w.columns for w in prompt.words]


def _special_pairs(source: PromptTokens, target: PromptTokens) -> list[tuple[int, int]]:
    """Pairs (source column, target column) for the start/end/padding columns, chunk by chunk.

    Within a chunk the tails ``[end, pad, pad …]`` are matched in order; where the target's tail is
    longer (its text is shorter), the extra columns take the source's last padding column.
    """
    if source.num_columns != target.num_columns:
        raise AlignmentError(
            f"prompts have {source.num_columns} and {target.num_columns} token columns; "
            "encode them together so they are padded to the same number of 77-token chunks"
        )
    pairs = []
    for cols in source.chunk_ranges():
        s_start = [i for i in cols if source.token_strings[i] == START]
        t_start = [j for j in cols if target.token_strings[j] == START]
        pairs += list(zip(s_start, t_start))
        s_tail = [i for i in cols if source.token_strings[i] in (END, PAD)]
        t_tail = [j for j in cols if target.token_strings[j] in (END, PAD)]
        for k, j in enumerate(t_tail):
            if s_tail:
                pairs.append((s_tail[min(k, len(s_tail) - 1)], j))
    return pairs


def _positional_opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib-style opcodes pairing ``a[k]`` with ``b[k]`` (equal runs and replace runs)."""
    ops: list[tuple[str, int, int, int, int]] = []
    for k, (x, y) in enumerate(zip(a, b)):
        op = "equal" if x == y else "replace"
        if ops and ops[-1][0] == op:
            ops[-1] = (op, ops[-1][1], k + 1, ops[-1][3], k + 1)
        else:
            ops.append((op, k, k + 1, k, k + 1))
    return ops


def _kept_words(opcodes) -> int:
    return sum(i2 - i1 for op, i1, i2, _, _ in opcodes if op == "equal")


def _same_parts(source: PromptTokens, target: PromptTokens) -> list[tuple[int, PromptTokens, PromptTokens]]:
    """``(first column, source part, target part)`` of each encoder part of a joined context."""
    layout = [(o, p.num_columns) for o, p in source.parts]
    if layout != [(o, p.num_columns) for o, p in target.parts]:
        raise AlignmentError(
            f"prompts have encoder parts of {[n for _, n in layout]} and "
            f"{[p.num_columns for _, p in target.parts]} token columns; encode them together")
    return [(o, s, t) for (o, s), (_, t) in zip(source.parts, target.parts)]


def _block_diagonal(blocks: list[tuple[int, torch.Tensor]], rows: int, cols: int) -> torch.Tensor:
    out = torch.zeros(rows, cols)
    for offset, block in blocks:
        out[offset: offset + block.shape[0], offset: offset + block.shape[1]] = block
    return out


def replacement_mapper(source: PromptTokens, target: PromptTokens) -> torch.Tensor:
    """``[source columns, target columns]`` mapper for a word-swap edit.

    Kept words always map to themselves, also after a swap whose token counts differ (the official
    mapper's ``mapper[j, j]`` after the last swap, which shifts them, is not reproduced).
    Raises :class:`AlignmentError` when the target adds or removes words (that is a refinement)
    or shares no word with the source (nothing would keep the image's layout).
    """
    if source.parts or target.parts:
        blocks = [(o, replacement_mapper(s, t)) for o, s, t in _same_parts(source, target)]
        return _block_diagonal(blocks, source.num_columns, target.num_columns)
    s_words, s_cols = _word_spans(source)
    t_words, t_cols = _word_spans(target)
    mapper = np.zeros((source.num_columns, target.num_columns), dtype=np.float32)
    opcodes = difflib.SequenceMatcher(a=s_words, b=t_words, autojunk=False).get_opcodes()
    if len(s_words) == len(t_words):
        # difflib matches the longest block first, so a kept word that also occurs inside the
        # swapped span ("red car next to red car" → "blue truck beside a red car") can be paired
        # with the wrong occurrence and the swap read as an insertion plus a deletion. With as many
        # words on both sides, position-by-position pairing is the swap whenever it keeps as many.
        positional = _positional_opcodes(s_words, t_words)
        if _kept_words(positional) >= _kept_words(opcodes):
            opcodes = positional
    kept = 0
    for op, i1, i2, j1, j2 in opcodes:
        if op in ("insert", "delete"):
            words = " ".join(t_words[j1:j2] if op == "insert" else s_words[i1:i2])
            verb = "adds" if op == "insert" else "removes"
            raise AlignmentError(
                f"the edited prompt {target.text!r} {verb} {words!r} compared with the source "
                f"{source.text!r}; a replace edit swaps words one span for another. Use the "
                "'refine' edit for added words, or keep the same words around the swap."
            )
        if op == "equal":
            kept += i2 - i1
        if i2 - i1 == j2 - j1:
            # word by word: kept words (one cut by a chunk end can have other tokens) and swapped
            # words alike, as Prompt-to-Prompt pairs the words of a swap
            spans = list(zip(s_cols[i1:i2], t_cols[j1:j2]))
        else:  # "rabbit" → "teddy bear": no word pairs with another, the span shares attention
            spans = [([c for cols in s_cols[i1:i2] for c in cols], [c for cols in t_cols[j1:j2] for c in cols])]
        for src, tgt in spans:
            if len(src) == len(tgt):
                mapper[list(src), list(tgt)] = 1.0
            else:
                mapper[np.ix_(src, tgt)] = 1.0 / len(tgt)
    if kept == 0 and s_words:
        raise AlignmentError(
            f"the edited prompt {target.text!r} shares no word with the source {source.text!r}, "
            "so there is no structure to keep; edit only the words that should change."
        )
    for i, j in _special_pairs(source, target):
        mapper[i, j] = 1.0
    return torch.from_numpy(mapper)


def global_align(x: list[str], y: list[str]) -> list[int]:
    """Needleman–Wunsch alignment of ``y`` against ``x``: for each ``y[j]`` the aligned ``i`` or -1.

    Scores as Prompt-to-Prompt: match +1, mismatch −1, gap 0 (so only equal tokens are ever paired:
    this is a longest common subsequence). Ties prefer pairing, then skipping an ``x`` token, on
    purpose: Prompt-to-Prompt's traceback prefers leaving a ``y`` token unaligned, so of equally
    long alignments it may pair another occurrence of a repeated token (README, "Where it differs
    from the official Prompt-to-Prompt code").
    """
    n, m = len(x), len(y)
    score = np.zeros((n + 1, m + 1), dtype=np.int32)
    for i in range(1, n + 1):
        xi = x[i - 1]
        for j in range(1, m + 1):
            diag = score[i - 1, j - 1] + (1 if xi == y[j - 1] else -1)
            score[i, j] = max(diag, score[i - 1, j], score[i, j - 1])
    mapping = [-1] * m
    i, j = n, m
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1] and score[i, j] == score[i - 1, j - 1] + 1:
            mapping[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif score[i, j] == score[i - 1, j]:
            i -= 1
        else:
            j -= 1
    return mapping


def refinement_alignment(source: PromptTokens, target: PromptTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, alpha)`` over target columns: ``index[j]`` is the aligned source column
    (``j`` itself where there is none) and ``alpha[j]`` is 1 where aligned, 0 for new tokens."""
    if source.parts or target.parts:
        indices, alphas = [], []
        for offset, s, t in _same_parts(source, target):
            index, alpha = refinement_alignment(s, t)
            indices.append(index + offset)
            alphas.append(alpha)
        return torch.cat(indices), torch.cat(alphas)
    if source.num_columns != target.num_columns:
        _special_pairs(source, target)  # raises the explanatory error
    mapping = global_align(list(source.token_strings), list(target.token_strings))
    if not any(i >= 0 and not source.is_special(i) for i in mapping):
        raise AlignmentError(
            f"the edited prompt {target.text!r} keeps no word of the source {source.text!r}; "
            "a refine edit adds words to the source prompt."
        )
    index = torch.tensor([i if i >= 0 else j for j, i in enumerate(mapping)], dtype=torch.long)
    alpha = torch.tensor([1.0 if i >= 0 else 0.0 for i in mapping], dtype=torch.float32)
    return index, alpha


def index_to_matrix(index: torch.Tensor, alpha: torch.Tensor, num_source: int) -> torch.Tensor:
    """The 0/1 matrix ``P[i, j] = alpha[j] · [index[j] == i]`` so a refinement is ``M_s @ P``."""
    matrix = torch.zeros(num_source, index.numel())
    matrix[index, torch.arange(index.numel())] = alpha
    return matrix
