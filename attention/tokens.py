"""Prompt → token columns, and word → column lookup.

A conditioning tensor has one column per token position. Words are recovered from the tokens the
text encoder itself saw, so the grouping follows its tokenizer whatever weight syntax or
punctuation the prompt used:

- CLIP: chunk ``c``, position ``p`` is column ``c * 77 + p``; each chunk is ``[start] + content +
  [end] + padding``; a token whose string ends in ``</w>`` closes a word (:func:`group_words`).
- T5 / SentencePiece (Flux.1, SD3, Chroma, Lumina 2's Gemma): one list; a piece beginning with
  ``▁`` begins a word (:func:`group_t5_words`).
- byte-level BPE of the LLM encoders (Qwen2 BPE: Qwen-Image, HunyuanImage, Z-Image, Flux.2 klein):
  a piece whose bytes begin with a space (``Ġ``) or newline begins a word (:func:`group_bpe_words`).
  Their prompts sit inside a chat template; :mod:`.clip_tokens` says which columns are the user's.
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


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2 byte-level BPE's printable stand-in for each byte (``Ġ`` = space, ``Ċ`` = newline),
    inverted: character → byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_OF = _byte_level_alphabet()
_HIGH_BYTE = 0x4E00  # a byte ≥ 0x80 as the CJK ideograph U+4E00 + byte while words are grouped


def bpe_piece_bytes(piece: str) -> bytes:
    """The bytes a byte-level BPE piece stands for (a special token such as ``<|im_end|>`` as itself)."""
    if all(ch in _BYTE_OF for ch in piece):
        return bytes(_BYTE_OF[ch] for ch in piece)
    return piece.encode("utf-8")


def bpe_label(piece: str) -> str:
    """A byte-level BPE piece as readable text, a leading space or newline shown as ``▁`` (as
    SentencePiece writes it, so :meth:`PromptTokens.token_labels` strips it)."""
    text = bpe_piece_bytes(piece).decode("utf-8", errors="replace")
    stripped = text.lstrip(" \t\r\n")
    return (T5_WORD_START + stripped) if len(stripped) < len(text) else text


def group_bpe_words(token_strings: Sequence[str]) -> tuple[Word, ...]:
    """Group byte-level BPE pieces (Qwen2: ``a``, ``Ġ(``, ``red``, ``:``, ``1``, ``.``, ``3``, ``)``)
    into words as :func:`group_t5_words` groups T5's: a piece whose bytes begin with whitespace
    begins a word, punctuation is a word of its own, and a word's text is its bytes decoded (a
    character split over two pieces is whole again). Bytes of non-ASCII characters travel through
    the grouping as letters (one CJK character per byte), so that a split UTF-8 character is never
    taken for punctuation nor decoded half."""
    marked = []
    for s in token_strings:
        if s in SPECIAL_STRINGS or s == EMBEDDING:
            marked.append(s)
            continue
        raw = "".join(chr(b) if b < 0x80 else chr(_HIGH_BYTE + b) for b in bpe_piece_bytes(s))
        stripped = raw.lstrip(" \t\r\n")
        marked.append((T5_WORD_START + stripped) if len(stripped) < len(raw) else stripped)
    words = []
    for w in group_t5_words(marked):
        text = w.text if w.text == EMBEDDING else bytes(
            ord(ch) - _HIGH_BYTE if ord(ch) >= _HIGH_BYTE else ord(ch) for ch in w.text).decode("utf-8", errors="replace")
        if text:
            words.append(Word(text, w.columns))
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
