"""Tokenise and encode Prompt-to-Prompt prompts with the user's own CLIP (duck-typed host object).

:data:`LLM_ENCODERS` is the table of the chat-template text encoders (one row per encoder kind:
how it is recognised, where the user's words sit among its columns); CLIP and T5 encoders are told
apart by their ``clip.tokenize()`` keys (:func:`prompt_encoder`).

All prompts of one P2P batch are tokenised by the CLIP's own tokenizer (weight syntax,
embeddings and chunking behave exactly as in CLIPTextEncode), brought to one length, and encoded
as one CONDITIONING batch (item 0 = source): CLIP encoders (77-token chunks) get empty chunks, an
unchunked encoder (T5 on Flux and SD3) gets pad tokens, as its own ``min_length`` padding does,
so every prompt's context has the same number of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .edit_spec import (
    CLIP_ENCODER, FLUX2_ENCODER, HUNYUAN_IMAGE_ENCODER, LUMINA2_ENCODER, QWEN_IMAGE_ENCODER, T5_ENCODER,
    TEXT_ENCODERS, WAN_ENCODER, Z_IMAGE_ENCODER)
from .errors import P2PInputError
from .tokens import (
    END, PAD, PromptTokens, Word, bpe_label, group_bpe_words, group_t5_words, prompt_tokens_from_chunks)

LUMINA2_SYSTEM_PROMPT = (
    "You are an assistant designed to generate superior images with the superior degree of image-text alignment "
    "based on textual prompts or user prompts. <Prompt Start> {}")
"""CLIPTextEncodeLumina2's default ("superior") system prompt: Lumina 2 was trained on prompts behind it."""


@dataclass(frozen=True)
class LLMEncoder:
    """One chat-template (LLM) text encoder: how a CLIP object shows it and how its columns are laid out.

    The tokenizer wraps the prompt in its template (``clip.tokenizer.llama_template``; Lumina 2's
    system prompt the pack adds itself: ``text_template``) and tokenizes the whole as one segment
    (weight syntax is literal text, except on Lumina 2). The user's words are found by tokenizing
    the template's prefix and suffix alone and checking that the prompt's tokens begin and end with them."""

    kind: str  # edit_spec encoder kind
    tokenizer_classes: tuple[str, ...]  # type(clip.tokenizer).__name__ (keys are shared: Z-Image and klein both say qwen3_4b)
    keys: tuple[str, ...]  # the clip.tokenize() key of its tokens
    text_template: str = "{}"  # applied by the pack before clip.tokenize (Lumina 2's system prompt)
    trims_prefix: bool = False  # the encoder drops the template up to the user's text (Qwen2.5-VL)
    context_length: int = 0  # the model left-pads the conditioning with zeros to this many columns (Flux.2 dev)
    sentencepiece: bool = False  # '▁' pieces (Gemma) rather than byte-level BPE
    byt5: bool = False  # quoted text is encoded once more by ByT5, its columns after the LLM's (HunyuanImage)


LLM_ENCODERS = (
    # system + "<|im_start|>user\n" is cut by the encoder: column 0 = first user token; then
    # "<|im_end|>\n<|im_start|>assistant\n" (5 columns)
    LLMEncoder(QWEN_IMAGE_ENCODER, ("QwenImageTokenizer",), ("qwen25_7b",), trims_prefix=True),
    # as Qwen-Image without the assistant suffix (columns: user + <|im_end|>), + ByT5 of quoted spans
    LLMEncoder(HUNYUAN_IMAGE_ENCODER, ("HunyuanImageTokenizer",), ("qwen25_7b",), trims_prefix=True, byt5=True),
    # "<|im_start|>user\n" (3 columns) + user + "<|im_end|>\n<|im_start|>assistant\n"; the model pads to 32·k
    LLMEncoder(Z_IMAGE_ENCODER, ("ZImageTokenizer",), ("qwen3_4b",)),
    # klein: as Z-Image + "<think>\n\n</think>\n\n", right-padded to 512 with <|endoftext|>
    LLMEncoder(FLUX2_ENCODER, ("KleinTokenizer", "KleinTokenizer8B"), ("qwen3_4b", "qwen3_8b")),
    # dev: Tekken BPE from the checkpoint; [SYSTEM_PROMPT]…[INST]{}[/INST]; the model left-pads to 512
    LLMEncoder(FLUX2_ENCODER, ("Flux2Tokenizer",), ("mistral3_24b",), context_length=512),
    # <bos> + system prompt + " <Prompt Start> " + user (weights parsed), nothing trimmed or padded
    LLMEncoder(LUMINA2_ENCODER, ("LuminaTokenizer",), ("gemma2_2b",), text_template=LUMINA2_SYSTEM_PROMPT,
               sentencepiece=True),
)

@dataclass(frozen=True)
class VisionPrompt:
    """Pictures a Qwen2.5-VL encoder reads inside the prompt (Qwen-Image-Edit): the tokenizer
    wraps ``user_prefix + prompt`` in ``template`` and gives each ``<|image_pad|>`` of the prefix
    one picture of ``images``, which its vision tower turns into ``image_columns[i]`` columns of
    the conditioning (a number that depends on the picture's size), so the user's words start
    after all of them."""

    template: str
    user_prefix: str
    images: tuple  # one [1, H, W, 3] IMAGE per <|image_pad|> of user_prefix, as the tokenizer takes them
    image_columns: tuple[int, ...]


IMAGE_PAD = "<|image_pad|>"
IMAGE = "<image>"  # the token string of a vision column

UMT5_KEY = "umt5xxl"
"""The ``clip.tokenize()`` key of Wan's umT5: SentencePiece pieces like T5's, padded to 512 columns
with pad id 0 (the encoder zeroes the pad columns' output), no start token, weights parsed."""

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


def llm_encoder(clip) -> LLMEncoder | None:
    """The row of :data:`LLM_ENCODERS` of ``clip`` (by its tokenizer's class), or None (CLIP, T5)."""
    name = type(getattr(clip, "tokenizer", None)).__name__
    return next((row for row in LLM_ENCODERS if name in row.tokenizer_classes), None)


def prompt_encoder(tokens: dict, clip=None) -> str:
    """The encoder kind of ``clip``'s prompts (`tokens` = clip.tokenize(…)): an LLM row's kind, else
    WAN_ENCODER for umT5, T5_ENCODER when the CLIP has a T5 (Flux, SD3, Chroma), else CLIP_ENCODER."""
    row = llm_encoder(clip) if clip is not None else None
    if row is not None:
        return row.kind
    if UMT5_KEY in tokens:
        return WAN_ENCODER
    return T5_ENCODER if "t5xxl" in tokens else CLIP_ENCODER


def _tokenize(clip, text: str, vision: VisionPrompt | None = None) -> dict:
    """clip.tokenize of ``text`` inside the pack's own template (Lumina 2's system prompt), or
    after ``vision``'s pictures in its template (Qwen-Image-Edit)."""
    if vision is not None:
        return clip.tokenize(vision.user_prefix + text, images=list(vision.images), llama_template=vision.template)
    row = llm_encoder(clip)
    return clip.tokenize(row.text_template.format(text) if row else text)


def _llm_key(row: LLMEncoder, tokens: dict) -> str:
    keys = [k for k in row.keys if k in tokens]
    if len(keys) != 1:
        raise P2PInputError(f"this CLIP's tokenizer produces {sorted(tokens)} tokens, not the {row.keys[0]!r} tokens "
                            f"of {TEXT_ENCODERS[row.kind]}; use the model's own text encoder")
    return keys[0]


def _piece_ids(sub, text: str) -> list[int]:
    """The ids ``sub`` gives ``text`` inside a prompt (its own start token left out)."""
    return list(sub.tokenizer(text)["input_ids"][sub.tokens_start:]) if text else []


def llm_prompt_tokens(clip, text: str, tokens: dict, context_columns: int | None = None,
                      vision: VisionPrompt | None = None) -> PromptTokens:
    """The columns and words of ``text`` in the CONDITIONING of an LLM encoder (``tokens`` =
    ``_tokenize(clip, text, vision)``): template columns keep their token strings, pad columns are
    PAD, vision columns IMAGE, and only the user's text makes words; for HunyuanImage the ByT5
    columns follow the Qwen ones (as the model appends them). Flux.2 dev's prompt sits at the right
    end of ``context_columns`` (default: the model's 512) after zero columns."""
    row = llm_encoder(clip)
    key = _llm_key(row, tokens)
    sub = getattr(clip.tokenizer, key, None)
    if sub is None or getattr(sub, "tokenizer", None) is None:
        raise P2PInputError(f"this CLIP's {key!r} tokenizer has no vocabulary (its tokenizer data is missing from "
                            "the text encoder file); load the text encoder file with its tokenizer")
    chunks = tokens[key]
    if len(chunks) != 1:
        raise P2PInputError(f"this CLIP's tokenizer split the prompt into {len(chunks)} lists; Prompt-to-Prompt expects one")
    ids = [t[0] for t in chunks[0]]
    if vision is not None:  # the tokenizer put each picture in its <|image_pad|> token's place
        image_pad = _piece_ids(sub, IMAGE_PAD)[0]
        ids = [image_pad if isinstance(i, dict) and i.get("type") == "image" else i for i in ids]
        template = vision.template
    else:
        template = row.text_template if row.text_template != "{}" else getattr(clip.tokenizer, "llama_template", "{}")
    prefix, suffix = template.split("{}")
    if row.sentencepiece:  # SentencePiece starts the user's first piece with its own '▁'
        prefix = prefix.rstrip(" ")
    prefix_ids = ([sub.start_token] if sub.start_token is not None else []) + _piece_ids(sub, prefix)
    template_prefix = len(prefix_ids)  # what the encoder trims (the pictures come after it)
    if vision is not None:
        prefix_ids += _piece_ids(sub, vision.user_prefix)
    suffix_ids = _piece_ids(sub, suffix)
    pad = getattr(sub, "pad_token", None)
    first = 0
    if getattr(sub, "pad_left", False):
        while first < len(ids) and ids[first] == pad:
            first += 1
    last = len(ids)  # after the last real token (the templates never end with the pad token)
    while last > first and ids[last - 1] == pad:
        last -= 1
    user = (first + len(prefix_ids), last - len(suffix_ids))
    if ids[first:user[0]] != prefix_ids or ids[user[1]:last] != suffix_ids or user[1] < user[0]:
        raise P2PInputError(
            f"the prompt {text!r} does not tokenize as the {TEXT_ENCODERS[row.kind]} template around it (its "
            "first or last characters merge with the template's); drop leading or trailing spaces and newlines")
    label = (lambda i: sub.inv_vocab.get(i, f"<{i}>")) if row.sentencepiece else \
        (lambda i: bpe_label(sub.inv_vocab.get(i, f"<{i}>")))
    strings = [PAD if (c < first or c >= last) else (label(i) if isinstance(i, int) else "<embedding>")
               for c, i in enumerate(ids)]
    pieces = [sub.inv_vocab.get(i, f"<{i}>") if isinstance(i, int) else "<embedding>" for i in ids[user[0]:user[1]]]
    grouped = group_t5_words(pieces) if row.sentencepiece else group_bpe_words(pieces)
    words = tuple(Word(w.text, tuple(c + user[0] for c in w.columns)) for w in grouped if w.text)
    if vision is not None:
        strings, words = _vision_columns(strings, words, ids[:user[0]], image_pad, vision)
    drop = first + template_prefix if row.trims_prefix else 0  # the columns the encoder cuts
    pad_left = 0
    if row.context_length:
        pad_left = max(0, (context_columns or max(row.context_length, len(ids))) - len(ids))
    shift = pad_left - drop
    strings = [PAD] * pad_left + strings[drop:]
    words = tuple(Word(w.text, tuple(c + shift for c in w.columns)) for w in words)
    llm = PromptTokens(text, tuple(strings), words, len(strings), cased=True)
    if row.byt5 and "byt5" in tokens:
        return PromptTokens.joined(text, (llm, _byt5_prompt_tokens(clip, text, tokens["byt5"])))
    return llm


def _vision_columns(strings: list[str], words: tuple[Word, ...], prefix_ids: list, image_pad: int,
                    vision: VisionPrompt) -> tuple[list[str], tuple[Word, ...]]:
    """``strings`` and ``words`` with each picture's one token column widened to its vision columns."""
    places = [c for c, i in enumerate(prefix_ids) if i == image_pad]
    if len(places) != len(vision.image_columns):
        raise P2PInputError(f"the prompt's template holds {len(places)} pictures, not the {len(vision.image_columns)} "
                            "images connected; connect the images in order (image1 first)")
    widened: list[str] = []
    for c, s in enumerate(strings):
        widened += [IMAGE] * vision.image_columns[places.index(c)] if c in places else [s]
    shift = sum(vision.image_columns) - len(places)  # the words all follow the pictures
    return widened, tuple(Word(w.text, tuple(c + shift for c in w.columns)) for w in words)


def _byt5_prompt_tokens(clip, text: str, chunks) -> PromptTokens:
    """HunyuanImage's ByT5 columns (``Text "…". `` per quoted span, one byte per column)."""
    sub = clip.tokenizer.byt5
    ids = [t[0] for t in chunks[0]]
    strings = tuple(END if i == sub.end_token else PAD if i == sub.pad_token else
                    ("▁" if sub.inv_vocab.get(i) == " " else sub.inv_vocab.get(i, f"<{i}>")) for i in ids)
    words = tuple(w for w in group_t5_words(strings) if w.text)
    return PromptTokens(text, strings, words, len(strings), cased=True)


def t5_prompt_tokens(clip, text: str, tokens: dict, key: str = "t5xxl") -> PromptTokens:
    """The T5 columns and words of `text` (`tokens` = clip.tokenize(text), with a ``t5xxl`` list, or
    Wan's umT5 ``umt5xxl`` list: the same SentencePiece grouping, its 512 columns with pads)."""
    sub = _sub_tokenizer(clip, key)
    if sub is None or not hasattr(sub, "inv_vocab"):
        raise P2PInputError("this CLIP's tokenizer has no T5 vocabulary; use the model's own text encoder")
    chunks = [[t[0] for t in chunk] for chunk in tokens[key]]
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
    the pack's encoders: CLIP's (SD1.x, SD2.x, SDXL), a T5 model's (:func:`context_tokens`) or an
    LLM encoder's (:func:`llm_prompt_tokens`; ``tokens`` as :func:`_tokenize` gives them)."""
    if llm_encoder(clip) is not None:  # tokenized again inside the pack's template (Lumina 2)
        return llm_prompt_tokens(clip, text, _tokenize(clip, text), context_columns)
    if prompt_encoder(tokens) == WAN_ENCODER:
        return t5_prompt_tokens(clip, text, tokens, UMT5_KEY)
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
    on SD3 they also find the lowercase CLIP words), or an LLM encoder's user words (byte-level BPE
    or SentencePiece, case kept)."""
    if llm_encoder(clip) is not None:
        # byte-level BPE gives a prompt's inner words their leading space ("Ġ(", "red"; alone "(red")
        query = text if llm_encoder(clip).sentencepiece else " " + text.lstrip()
        tokens = llm_prompt_tokens(clip, query, _tokenize(clip, query))
        return tuple(w.text for w in (tokens.parts[0][1] if tokens.parts else tokens).words)
    tokens = clip.tokenize(text)
    if prompt_encoder(tokens) == WAN_ENCODER:
        return tuple(w.text for w in t5_prompt_tokens(clip, text, tokens, UMT5_KEY).words)
    if prompt_encoder(tokens) == T5_ENCODER:
        return tuple(w.text for w in t5_prompt_tokens(clip, text, tokens).words)
    return tuple(w.text for w in prompt_tokens(clip, text, tokens).words)


def _sub_tokenizer(clip, key: str):
    """The tokenizer of one encoder of ``clip`` (``clip_l`` for key ``l``, ``t5xxl`` for ``t5xxl``)."""
    return getattr(clip.tokenizer, f"clip_{key}", None) or getattr(clip.tokenizer, key, None)


def _pad_to_one_length(clip, tokenized: list[dict], empty: dict, keys: Sequence[str] | None = None) -> None:
    """Bring every prompt's tokens of each encoder to one shape, in place: as many chunks (empty
    ones added), then within each chunk as many tokens (the encoder's pad token added; CLIP chunks
    are 77 already, an unchunked T5 list is as long as its prompt, at least its min_length)."""
    for key in keys if keys is not None else tokenized[0]:
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


def _even_llm_lengths(clip, row: LLMEncoder, tokenized: list[dict]) -> None:
    """Bring the LLM tokens of every prompt to one length, in place, by right padding with the
    tokenizer's pad token: the encoders are causal, so pads at the tail leave every earlier column
    as it is, and the encoder's attention mask marks them (Qwen-Image and HunyuanImage mask them in
    the model; Z-Image, klein and Lumina 2 attend them, as they attend their own padding). Flux.2
    dev is left alone: its conditioning is padded on the left with zeros, as the model does.
    HunyuanImage's ByT5 tokens are padded likewise (pad columns are zeroed by its encoder)."""
    keys = [_llm_key(row, tokenized[0])] + (["byt5"] if row.byt5 else [])
    if row.byt5 and 0 < sum("byt5" in t for t in tokenized) < len(tokenized):
        raise P2PInputError(
            "source / edits: some prompts quote text and some do not; HunyuanImage encodes quoted text once more "
            "(ByT5), so quote text (\"like this\") in every prompt or in none")
    for key in keys:
        if row.context_length and key != "byt5" or key not in tokenized[0]:
            continue
        _pad_to_one_length(clip, tokenized, {}, keys=(key,))


def _left_pad_columns(cond: torch.Tensor, columns: int) -> torch.Tensor:
    """Zero columns in front of ``cond`` up to ``columns`` (what Flux.2 does to a shorter context)."""
    if cond.shape[1] >= columns:
        return cond
    return torch.nn.functional.pad(cond, (0, 0, columns - cond.shape[1], 0))


def _joined_extras(encoded: list[dict]) -> dict:
    """The encoders' extra outputs of every prompt as one batch: tensors concatenated (an attention
    mask missing from a prompt, because it was all ones, given back as ones)."""
    extras = {}
    for key in {k for e in encoded for k in e if k != "cond"}:
        values = [e.get(key) for e in encoded]
        if key == "attention_mask":
            n = next(v for v in values if v is not None).shape[1]
            values = [v if v is not None else torch.ones((1, n), dtype=torch.long) for v in values]
        if all(isinstance(v, torch.Tensor) for v in values):
            extras[key] = torch.cat(values)
        else:
            extras[key] = values[0]
    return extras


def encode_prompts(clip, prompts: Sequence[str],
                   vision: VisionPrompt | None = None) -> tuple[list, list[PromptTokens], str]:
    """CONDITIONING with one batch item per prompt, each prompt's :class:`PromptTokens` (for a T5
    encoder, laid out as the context's columns: see :func:`context_tokens`) and the encoder kind;
    with ``vision``, every prompt follows its pictures (Qwen-Image-Edit)."""
    row = llm_encoder(clip)
    if vision is not None and (row is None or row.kind != QWEN_IMAGE_ENCODER):
        raise P2PInputError(f"image: only Qwen-Image's text encoder (Qwen2.5-VL) reads pictures in the prompt; this "
                            f"CLIP is {TEXT_ENCODERS.get(prompt_encoder(clip.tokenize(''), clip), 'another encoder')}. "
                            "Load the Qwen-Image text encoder (qwen_2.5_vl_7b) with a CLIP loader of type qwen_image")
    tokenized = [_tokenize(clip, p, vision) for p in prompts]
    if row is None:
        _pad_to_one_length(clip, tokenized, clip.tokenize(""))
    else:
        _even_llm_lengths(clip, row, tokenized)
    encoded = [clip.encode_from_tokens(t, return_pooled=True, return_dict=True) for t in tokenized]
    if row is not None and row.context_length:
        columns = max([row.context_length] + [e["cond"].shape[1] for e in encoded])
        for e in encoded:
            e["cond"] = _left_pad_columns(e["cond"], columns)
            e.pop("attention_mask", None)  # Flux.2 reads no mask; its zero columns are attended
    cond = torch.cat([e["cond"] for e in encoded])
    extras = _joined_extras(encoded)
    if row is None:
        tokens = [conditioning_tokens(clip, p, t, cond.shape[1]) for p, t in zip(prompts, tokenized)]
    else:  # as padded here
        tokens = [llm_prompt_tokens(clip, p, t, cond.shape[1], vision) for p, t in zip(prompts, tokenized)]
    if vision is not None and tokens[0].num_columns != cond.shape[1]:  # the vision tower counted otherwise
        raise P2PInputError(
            f"the pictures gave the conditioning {cond.shape[1] - tokens[0].num_columns + sum(vision.image_columns)} "
            f"vision columns, not the {sum(vision.image_columns)} the pack counted from their sizes; this ComfyUI's "
            "Qwen2.5-VL is not supported yet by P2P Prompts (Qwen-Image-Edit)")
    return [[cond, extras]], tokens, prompt_encoder(tokenized[0], clip)
