"""Synthetic inputs for the tests that need no tokenizer or model: prompts whose words are made of
fake BPE sub-tokens, and random q/k/v with a fused-attention stand-in in the host's layout."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from comfyui_prompt_edit.attention.tokens import prompt_tokens_from_chunks

CHUNK = 77
CONTENT = CHUNK - 2
START_ID, END_ID = 49406, 49407
EMB = "@emb"  # sub-token marker: the chunk entry becomes a non-int (textual-inversion vector)


class FakeVocab:
    """Token string ↔ id. Id 0 is ``!</w>`` as in CLIP, so a CLIP-G pad (id 0) collides with a real token."""

    def __init__(self) -> None:
        self.ids = {"!</w>": 0, "<|startoftext|>": START_ID, "<|endoftext|>": END_ID}
        self.strings = {i: s for s, i in self.ids.items()}

    def entry(self, s: str) -> object:
        if s == EMB:
            return ("embedding vector",)
        if s not in self.ids:
            i = 1000 + len(self.ids)
            self.ids[s], self.strings[i] = i, s
        return self.ids[s]

    def string(self, i: int) -> str:
        return self.strings[i]


VOCAB = FakeVocab()


def words_of(text: str) -> list[list[str]]:
    """``"a ted|dy bear"`` → ``[["a</w>"], ["ted", "dy</w>"], ["bear</w>"]]`` (``|`` splits sub-tokens)."""
    out = []
    for word in text.split():
        if word == EMB:
            out.append([EMB])
            continue
        pieces = word.split("|")
        out.append(pieces[:-1] + [pieces[-1] + "</w>"])
    return out


def make_prompt(
    words: Sequence[Sequence[str]] | str,
    *,
    pad_id: int = END_ID,
    num_chunks: int | None = None,
    split: str = "word",
    text: str | None = None,
):
    """Lay ``words`` (each a list of sub-token strings) out as 77-token chunks of ids.

    ``split="word"`` moves a word that does not fit to the next chunk (as ComfyUI does for short
    words); ``split="simple"`` fills every chunk with 75 tokens, cutting words at the boundary.
    """
    if isinstance(words, str):
        words = words_of(words)
    rows: list[list[object]] = [[]]
    for word in words:
        ids = [VOCAB.entry(t) for t in word]
        if split == "word" and rows[-1] and len(rows[-1]) + len(ids) > CONTENT:
            rows.append([])
        for t in ids:
            if len(rows[-1]) == CONTENT:
                rows.append([])
            rows[-1].append(t)
    rows += [[] for _ in range((num_chunks or 0) - len(rows))]
    chunks = [[START_ID] + row + [END_ID] + [pad_id] * (CONTENT - len(row)) for row in rows]
    if text is None:
        text = " ".join("".join(w).replace("</w>", "") for w in words)
    return prompt_tokens_from_chunks(text, chunks, VOCAB.string, END_ID)


def make_pair(src_words, tgt_words, **kw):
    """Both prompts padded to one width, as ``encode_prompts`` does."""
    a, b = make_prompt(src_words, **kw), make_prompt(tgt_words, **kw)
    n = max(a.num_chunks, b.num_chunks)
    return make_prompt(src_words, num_chunks=n, **kw), make_prompt(tgt_words, num_chunks=n, **kw)


HEADS, DIM = 4, 8
"""Attention heads and channels per head of qkv()'s tensors."""


def sdpa(q, k, v, heads=HEADS):
    """A fused-kernel stand-in with the host's merged-heads layout."""
    b, nq, hd = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, hd // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, nq, hd)


def qkv(batch, nq, nk, dtype=torch.float32, seed=0):
    """Random (q [batch, nq, HEADS*DIM], k and v [batch, nk, HEADS*DIM]), seeded."""
    g = torch.Generator().manual_seed(seed)
    make = lambda n: torch.randn(batch, n, HEADS * DIM, generator=g).to(dtype)  # noqa: E731
    return make(nq), make(nk), make(nk)
