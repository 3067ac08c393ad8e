"""Tokenise and encode Prompt-to-Prompt prompts with the user's own CLIP (duck-typed host object).

All prompts of one P2P batch are tokenised by the CLIP's own tokenizer (weight syntax,
embeddings and chunking behave exactly as in CLIPTextEncode), padded with empty 77-token chunks
to one width, and encoded as one CONDITIONING batch (item 0 = source).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import P2PInputError
from .tokens import PromptTokens, prompt_tokens_from_chunks

# Encoder whose token layout defines the columns: CLIP-L where present (SD1.x, SDXL), else CLIP-H (SD2.x).
_LAYOUT_KEYS = ("l", "h", "g")


def layout_key(tokens: dict) -> str:
    """The encoder whose token layout defines the columns (see _LAYOUT_KEYS)."""
    for key in _LAYOUT_KEYS:
        if key in tokens:
            return key
    raise P2PInputError(
        f"this CLIP's tokenizer produces {sorted(tokens)} tokens; Prompt-to-Prompt supports the CLIP "
        "text encoders of SD1.x, SD2.x and SDXL"
    )


def prompt_tokens(clip, text: str, tokens: dict) -> PromptTokens:
    """The columns and words of `text` as `clip` tokenised it (`tokens` = clip.tokenize(text))."""
    key = layout_key(tokens)
    sub = getattr(clip.tokenizer, f"clip_{key}", None)
    if sub is None or not hasattr(sub, "inv_vocab"):
        raise P2PInputError(f"this CLIP's tokenizer has no CLIP-{key.upper()} vocabulary; use an SD1.x, SD2.x or SDXL CLIP")
    chunks = [[t[0] for t in chunk] for chunk in tokens[key]]
    return prompt_tokens_from_chunks(
        text, chunks, lambda i: sub.inv_vocab.get(i, f"<{i}>"), sub.end_token, sub.start_token is not None
    )


def clip_words(clip, text: str) -> tuple[str, ...]:
    """The CLIP words of ``text`` ("Teddy-bear" → ``("teddy", "-", "bear")``)."""
    tokens = clip.tokenize(text)
    return tuple(w.text for w in prompt_tokens(clip, text, tokens).words)


def encode_prompts(clip, prompts: Sequence[str]) -> tuple[list, list[PromptTokens]]:
    """CONDITIONING with one batch item per prompt, and each prompt's :class:`PromptTokens`."""
    tokenized = [clip.tokenize(p) for p in prompts]
    empty = clip.tokenize("")
    width = max(len(t[layout_key(t)]) for t in tokenized)
    for t in tokenized:
        for key, chunks in t.items():
            chunks.extend(empty[key][0] for _ in range(width - len(chunks)))
    encoded = [clip.encode_from_tokens(t, return_pooled=True, return_dict=True) for t in tokenized]
    cond = torch.cat([e["cond"] for e in encoded])
    extras = {}
    for key, value in encoded[0].items():
        if key == "cond":
            continue
        if isinstance(value, torch.Tensor) and all(isinstance(e.get(key), torch.Tensor) for e in encoded):
            extras[key] = torch.cat([e[key] for e in encoded])
        else:
            extras[key] = value
    return [[cond, extras]], [prompt_tokens(clip, p, t) for p, t in zip(prompts, tokenized)]
