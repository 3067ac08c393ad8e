"""Prompt → token columns, and word → column lookup.

A conditioning tensor has one column per token position: chunk ``c``, position ``p`` is column
``c * 77 + p``. Each chunk is ``[start] + content + [end] + padding``. Words are recovered from the
CLIP BPE vocabulary itself (a token whose string ends in ``</w>`` closes a word), so the grouping is
exactly the one the text encoder saw, whatever weight syntax or punctuation the prompt used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..base.errors import PromptEditError

WORD_END = "</w>"
T5_WORD_START = "▁"  # SentencePiece's space: a piece that begins with it begins a word
START, END, PAD, EMBEDDING = "<start>", "<end>", "<pad>", "<embedding>"
SPECIAL_STRINGS = (START, END, PAD)


@dataclass(frozen=True)
class Word:
    """One CLIP word (``teddy``, ``,``) and the conditioning columns its tokens occupy."""

    text: str
    columns: tuple[int, ...]


@dataclass(frozen=True)
class PromptTokens:
    """A tokenised prompt laid out exactly as its conditioning tensor's columns."""

    text: str
    token_strings: tuple[str, ...]  # one per column; special columns use START/END/PAD
    words: tuple[Word, ...]
    chunk_length: int
    cased: bool = True  # False for CLIP, which lowercases its text: a query matches it lowercased
    parts: tuple[tuple[int, "PromptTokens"], ...] = ()  # (first column, part) of each encoder (SD3)

    @property
    def num_columns(self) -> int:
        return len(self.token_strings)

    @property
    def num_chunks(self) -> int:
        return self.num_columns // self.chunk_length if self.chunk_length else 0

    @classmethod
    def text_only(cls, text: str) -> "PromptTokens":
        """A prompt whose tokens are not laid out as conditioning columns (a T5 context): its text,
        no columns, no words."""
        return cls(text, (), (), 0)

    @classmethod
    def joined(cls, text: str, parts: Sequence["PromptTokens"]) -> "PromptTokens":
        """One context made of several encoders' columns side by side (SD3: CLIP-L‖G, then T5):
        the words of every part, at their columns in the context."""
        offsets, columns = [], 0
        for part in parts:
            offsets.append(columns)
            columns += part.num_columns
        words = tuple(Word(w.text, tuple(c + o for c in w.columns)) for o, p in zip(offsets, parts) for w in p.words)
        strings = tuple(s for p in parts for s in p.token_strings)
        return cls(text, strings, words, 0, parts=tuple(zip(offsets, parts)))

    def is_special(self, column: int) -> bool:
        return self.token_strings[column] in SPECIAL_STRINGS

    def start_end_columns(self) -> tuple[int, ...]:
        """The columns of the start and end tokens (shown with a map when asked for)."""
        return tuple(c for c, s in enumerate(self.token_strings) if s in (START, END))

    def chunk_ranges(self) -> list[range]:
        """The columns of each chunk (77 columns of a CLIP, or a T5's whole list)."""
        n = self.chunk_length
        return [range(c * n, (c + 1) * n) for c in range(self.num_chunks)]

    def find(self, query: Sequence[str]) -> list[tuple[int, ...]]:
        """All occurrences of the word sequence ``query`` (the encoder's words), as column tuples;
        in a joined context, the occurrences in every part."""
        if self.parts:
            return [tuple(c + o for c in hit) for o, part in self.parts for hit in part.find(query)]
        if not self.cased:
            query = [q.lower() for q in query]
        texts = [w.text for w in self.words]
        n = len(query)
        hits = []
        for i in range(len(texts) - n + 1):
            if n and texts[i : i + n] == list(query):
                hits.append(tuple(c for w in self.words[i : i + n] for c in w.columns))
        return hits

    def token_labels(self) -> list[str]:
        """Readable label per column, for attention-map tiles: CLIP's ``</w>`` and T5's word-start
        ``▁`` stripped (a lone ``▁``, the space before a word, shows as ``_``)."""
        return [_label(s) for s in self.token_strings]


def _label(token: str) -> str:
    if token.endswith(WORD_END):
        return token[: -len(WORD_END)]
    if token.startswith(T5_WORD_START):
        return token[len(T5_WORD_START):] or "_"
    return token


def group_words(token_strings: Sequence[str]) -> tuple[Word, ...]:
    """Group consecutive content tokens into words at ``</w>`` boundaries."""
    words: list[Word] = []
    pending_text, pending_cols = "", []
    for col, s in enumerate(token_strings):
        if s in SPECIAL_STRINGS or s == EMBEDDING:
            if pending_cols:  # a word cut by a chunk boundary or an embedding still counts
                words.append(Word(pending_text, tuple(pending_cols)))
                pending_text, pending_cols = "", []
            if s == EMBEDDING:
                words.append(Word(EMBEDDING, (col,)))
            continue
        pending_cols.append(col)
        if s.endswith(WORD_END):
            words.append(Word(pending_text + s[: -len(WORD_END)], tuple(pending_cols)))
            pending_text, pending_cols = "", []
        else:
            pending_text += s
    if pending_cols:
        words.append(Word(pending_text, tuple(pending_cols)))
    return tuple(words)


def _is_punctuation(piece: str) -> bool:
    return bool(piece) and not any(ch.isalnum() for ch in piece)


def group_t5_words(token_strings: Sequence[str]) -> tuple[Word, ...]:
    """Group T5 (SentencePiece) pieces into words, split as CLIP splits them: a piece that begins
    with ``▁`` begins a word (a lone ``▁`` joins the piece after it: "▁", "a" is the word "a"),
    any other piece continues the word, except that punctuation is a word of its own ("▁Teddy",
    "-", "be", "ar", "," → "Teddy", "-", "bear", ","), so the words of both encoders of SD3 agree."""
    words: list[Word] = []
    pending_text, pending_cols = "", []
    lone_start = False  # the last piece was a lone ▁: the next piece is the word's text

    def close() -> None:
        nonlocal pending_text, pending_cols
        if pending_text or pending_cols:
            words.append(Word(pending_text, tuple(pending_cols)))
        pending_text, pending_cols = "", []

    for col, s in enumerate(token_strings):
        if s in SPECIAL_STRINGS or s == EMBEDDING:
            close()
            lone_start = False
            if s == EMBEDDING:
                words.append(Word(EMBEDDING, (col,)))
            continue
        starts = s.startswith(T5_WORD_START)
        piece = s.lstrip(T5_WORD_START)
        if starts and not lone_start:
            close()
        if not piece:  # a lone ▁: its word is the next piece
            pending_cols.append(col)
            lone_start = True
            continue
        lone_start = False
        if _is_punctuation(piece) or (pending_text and _is_punctuation(pending_text)):
            if pending_text:
                close()
        pending_text += piece
        pending_cols.append(col)
    close()
    return tuple(words)


def prompt_tokens_from_chunks(
    text: str,
    chunks: Sequence[Sequence[object]],
    token_string: Callable[[int], str],
    end_id: int,
    has_start: bool = True,
    group: Callable[[Sequence[str]], tuple[Word, ...]] = group_words,
    cased: bool = False,
) -> PromptTokens:
    """Build :class:`PromptTokens` from a tokenizer's chunks of token ids.

    ``chunks`` holds one list per 77-token chunk; an entry is a token id, or anything else (a
    textual-inversion vector) which becomes an ``<embedding>`` column. Special columns are found
    by position, not id, because CLIP-G pads with id 0, which is also the real token ``!``.
    """
    strings: list[str] = []
    lengths = {len(c) for c in chunks}
    if len(lengths) != 1:
        raise PromptEditError(f"token chunks of unequal length {sorted(lengths)}")
    for chunk in chunks:
        ended = False
        for pos, token in enumerate(chunk):
            if pos == 0 and has_start:
                strings.append(START)
            elif ended:
                strings.append(PAD)
            elif isinstance(token, int) and token == end_id:
                strings.append(END)
                ended = True
            elif isinstance(token, int):
                strings.append(token_string(token))
            else:
                strings.append(EMBEDDING)
    return PromptTokens(text, tuple(strings), group(strings), lengths.pop(), cased)
