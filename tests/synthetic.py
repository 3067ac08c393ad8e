"""Synthetic prompts for tests that need no tokenizer: every word is one or more fake BPE tokens."""

from __future__ import annotations

from typing import Sequence

from comfyui_prompt_edit.attention.tokens import PromptTokens, prompt_tokens_from_chunks

CHUNK = 77
START_ID, END_ID = 1, 2


def make_prompt(words: Sequence[str | Sequence[str]], chunks: int = 1, pad_id: int = END_ID) -> PromptTokens:
    """``words``: a plain word is one token (``"cat"`` → ``cat</w>``); a list gives its sub-tokens.

    Content is laid 75 tokens per chunk; ``chunks`` pads with empty chunks to a common width.
    """
    vocab: dict[int, str] = {}
    content: list[int] = []
    for word in words:
        pieces = [word] if isinstance(word, str) else list(word)
        for i, piece in enumerate(pieces):
            s = piece if piece.endswith("</w>") or i < len(pieces) - 1 else piece + "</w>"
            token = 100 + len(vocab)
            vocab[token] = s
            content.append(token)
    rows = [content[i : i + CHUNK - 2] for i in range(0, max(len(content), 1), CHUNK - 2)]
    rows += [[] for _ in range(chunks - len(rows))]
    chunk_ids = [[START_ID] + row + [END_ID] + [pad_id] * (CHUNK - 2 - len(row)) for row in rows]
    text = " ".join(w if isinstance(w, str) else "".join(w) for w in words)
    return prompt_tokens_from_chunks(text, chunk_ids, vocab.__getitem__, END_ID)
