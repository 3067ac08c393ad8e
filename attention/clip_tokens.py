"""Tokenise and encode Prompt-to-Prompt prompts with the user's own CLIP (duck-typed host object).

All prompts of one P2P batch are tokenised by the CLIP's own tokenizer (weight syntax,
embeddings and chunking behave exactly as in CLIPTextEncode), brought to one length, and encoded
as one CONDITIONING batch (item 0 = source): CLIP encoders (77-token chunks) get empty chunks, an
unchunked encoder (T5 on Flux and SD3) gets pad tokens, as its own ``min_length`` padding does,
so every prompt's context has the same number of tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .edit_spec import CLIP_ENCODER, T5_ENCODER
from .errors import P2PInputError
from .tokens import PromptTokens, group_t5_words, prompt_tokens_from_chunks

# Encoder whose token layout defines the columns: CLIP-L where present (SD1.x, SDXL), else CLIP-H (SD2.x).
_LAYOUT_KEYS = ("l", "h", "g")


def layout_key(tokens: dict) -> str:
    """The encoder whose token layout defines the columns (see _LAYOUT_KEYS)."""
    for key in _LAYOUT_KEYS:
        if key in tokens:
            return key
    raise P2PInputError(
        f"this CLIP's tokenizer produces {sorted(tokens)} tokens; Prompt-to-Prompt supports the text "
        "encoders of SD1.x, SD2.x, SDXL, Flux and SD3"
    )


def prompt_encoder(tokens: dict) -> str:
    """T5_ENCODER when the CLIP has a T5 (Flux, SD3), else CLIP_ENCODER (`tokens` = clip.tokenize(…))."""
    return T5_ENCODER if "t5xxl" in tokens else CLIP_ENCODER


def t5_prompt_tokens(clip, text: str, tokens: dict) -> PromptTokens:
    """The T5 columns and words of `text` (`tokens` = clip.tokenize(text), with a ``t5xxl`` list)."""
    sub = _sub_tokenizer(clip, "t5xxl")
    if sub is None or not hasattr(sub, "inv_vocab"):
        raise P2PInputError("this CLIP's tokenizer has no T5 vocabulary; use the model's own text encoder")
    chunks = [[t[0] for t in chunk] for chunk in tokens["t5xxl"]]
    if len(chunks) != 1:
        raise P2PInputError(f"this CLIP's T5 tokenizer split the prompt into {len(chunks)} lists; "
                            "Prompt-to-Prompt expects one")
    return prompt_tokens_from_chunks(
        text, chunks, lambda i: sub.inv_vocab.get(i, f"<{i}>"), sub.end_token, sub.start_token is not None,
        group=group_t5_words, cased=True)


def context_tokens(clip, text: str, tokens: dict, context_columns: int) -> PromptTokens:
    """The columns and words of `text` in a T5 model's context of `context_columns` columns: T5's
    alone (Flux), or CLIP-L‖G's 77·k columns then T5's (SD3), told apart by the context's width."""
    t5 = t5_prompt_tokens(clip, text, tokens)
    if context_columns == t5.num_columns:
        return t5
    clip_part = prompt_tokens(clip, text, {k: v for k, v in tokens.items() if k != "t5xxl"})
    if context_columns != clip_part.num_columns + t5.num_columns:
        raise P2PInputError(
            f"this CLIP's context has {context_columns} token columns, neither its T5's {t5.num_columns} nor "
            f"its CLIP's {clip_part.num_columns} plus T5's; Prompt-to-Prompt supports the encoders of Flux and SD3")
    return PromptTokens.joined(text, (clip_part, t5))


def conditioning_tokens(clip, text: str, tokens: dict, context_columns: int) -> PromptTokens:
    """The columns and words of `text` in its CONDITIONING of `context_columns` columns, for any of
    the pack's encoders: CLIP's (SD1.x, SD2.x, SDXL) or a T5 model's (:func:`context_tokens`)."""
    if prompt_encoder(tokens) == T5_ENCODER:
        return context_tokens(clip, text, tokens, context_columns)
    return prompt_tokens(clip, text, tokens)


def prompt_tokens(clip, text: str, tokens: dict) -> PromptTokens:
    """The CLIP columns and words of `text` as `clip` tokenised it (`tokens` = clip.tokenize(text))."""
    key = layout_key(tokens)
    sub = _sub_tokenizer(clip, key)
    if sub is None or not hasattr(sub, "inv_vocab"):
        raise P2PInputError(f"this CLIP's tokenizer has no CLIP-{key.upper()} vocabulary; use an SD1.x, SD2.x or SDXL CLIP")
    chunks = [[t[0] for t in chunk] for chunk in tokens[key]]
    return prompt_tokens_from_chunks(
        text, chunks, lambda i: sub.inv_vocab.get(i, f"<{i}>"), sub.end_token, sub.start_token is not None
    )


def clip_words(clip, text: str) -> tuple[str, ...]:
    """The words of ``text`` as the CLIP's prompts are split: CLIP words ("Teddy-bear" →
    ``("teddy", "-", "bear")``), or with a T5 (Flux, SD3) T5 words, case kept (``("Teddy", "-", "bear")``;
    on SD3 they also find the lowercase CLIP words)."""
    tokens = clip.tokenize(text)
    if prompt_encoder(tokens) == T5_ENCODER:
        return tuple(w.text for w in t5_prompt_tokens(clip, text, tokens).words)
    return tuple(w.text for w in prompt_tokens(clip, text, tokens).words)


def _sub_tokenizer(clip, key: str):
    """The tokenizer of one encoder of ``clip`` (``clip_l`` for key ``l``, ``t5xxl`` for ``t5xxl``)."""
    return getattr(clip.tokenizer, f"clip_{key}", None) or getattr(clip.tokenizer, key, None)


def _pad_to_one_length(clip, tokenized: list[dict], empty: dict) -> None:
    """Bring every prompt's tokens of each encoder to one shape, in place: as many chunks (empty
    ones added), then within each chunk as many tokens (the encoder's pad token added; CLIP chunks
    are 77 already, an unchunked T5 list is as long as its prompt, at least its min_length)."""
    for key in tokenized[0]:
        width = max(len(t[key]) for t in tokenized)
        for t in tokenized:
            t[key].extend(list(empty[key][0]) for _ in range(width - len(t[key])))
        for c in range(width):
            length = max(len(t[key][c]) for t in tokenized)
            short = [t[key][c] for t in tokenized if len(t[key][c]) < length]
            if not short:
                continue
            pad = getattr(_sub_tokenizer(clip, key), "pad_token", None)
            if pad is None:
                raise P2PInputError(
                    f"the prompts give this CLIP's {key!r} encoder different lengths and it has no pad token "
                    "to even them out; make the prompts about as long")
            for chunk in short:
                entry = (pad, 1.0) + (0,) * (len(chunk[0]) - 2)  # (token, weight[, word id]) like the chunk's own
                chunk.extend([entry] * (length - len(chunk)))


def encode_prompts(clip, prompts: Sequence[str]) -> tuple[list, list[PromptTokens], str]:
    """CONDITIONING with one batch item per prompt, each prompt's :class:`PromptTokens` (for a T5
    encoder, laid out as the context's columns: see :func:`context_tokens`) and the encoder kind."""
    tokenized = [clip.tokenize(p) for p in prompts]
    _pad_to_one_length(clip, tokenized, clip.tokenize(""))
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
    tokens = [conditioning_tokens(clip, p, t, cond.shape[1]) for p, t in zip(prompts, tokenized)]
    return [[cond, extras]], tokens, prompt_encoder(tokenized[0])
