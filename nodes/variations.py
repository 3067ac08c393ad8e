"""Stochastic-embedding variations: N items of one latent batch, each with its own sampled text or
null-text embedding, sampled by the stock KSampler in one call."""

from __future__ import annotations

import dataclasses

import torch

from ..attention.clip_tokens import clip_words, conditioning_tokens
from ..attention.edit_spec import P2PEdit
from ..attention.tokens import PromptTokens
from ..base.word_lists import split_word_list
from ..families import family_of
from ..patching.sampling_call import COND, UNCOND
from ..vae_embed.checkpoint import TrainedEmbeddingVAE
from ..vae_embed.context_patch import SampledContextPatch
from ..vae_embed.errors import VariationInputError
from ..vae_embed.sampling import VAEDraws, item_noise, token_noise
from .common import CATEGORY_VARIATIONS, EMBEDDING_VAE, P2P_EDIT
from .latent_batch import repeat_latent

MODES = ("token noise", "embedding VAE")


def _repeat_rows(conditioning, rows: list[int]):
    """CONDITIONING whose tensors (and batched extras such as SDXL's pooled output) hold ``rows``."""
    out = []
    for cond, extras in conditioning:
        batch = cond.shape[0]
        new_extras = {k: v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch else v
                      for k, v in extras.items()}
        out.append([cond[rows], new_extras])
    return out


def _encoder_parts(cond: torch.Tensor, extras: dict) -> tuple[int, int] | None:
    """SDXL's context is CLIP-L's channels then CLIP-G's, whose width the pooled output has; the
    two are scaled separately. None where one encoder fills the context (SD1.x, SD2.x)."""
    pooled = extras.get("pooled_output")
    width = cond.shape[-1]
    if isinstance(pooled, torch.Tensor) and pooled.shape[-1] < width:
        return (width - pooled.shape[-1], pooled.shape[-1])
    return None


def _check_mmdit_request(mode: str, family_name: str) -> None:
    """Joint-attention transformers and Wan consult no UNet attn2 replace patch, which the embedding-VAE mode is
    (and its VAEs are trained on a UNet model's embeddings)."""
    if mode != "token noise":
        raise VariationInputError(
            f"mode: '{mode}' swaps the context through a UNet's cross-attention patches, which {family_name} does "
            "not read; use 'token noise'")


def _edited_columns(edit: P2PEdit, target: PromptTokens, words: list[str], tokenize_words) -> list[int]:
    """Columns of ``target`` to noise: the given words, else the words the source does not have."""
    if words:
        hits = [c for w in words for hit in target.find(tuple(tokenize_words(w))) for c in hit]
        return sorted(set(hits))
    source_words = {w.text for w in edit.source.words}
    return sorted(c for w in target.words if w.text not in source_words for c in w.columns)


class StochasticEmbeddings:
    DESCRIPTION = (
        "Makes `count` variations in one latent batch: each item gets its own sampled text embedding "
        "(token noise on chosen words) or its own draw from an embedding VAE (text or null-text, "
        "re-drawn at every step). With a p2p_edit, the edited prompts are repeated `count` times and "
        "the source branch (item 0) is left untouched. Sample the outputs with the stock KSampler."
    )
    CATEGORY = CATEGORY_VARIATIONS
    FUNCTION = "vary"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "LATENT", P2P_EDIT)
    RETURN_NAMES = ("model", "positive", "latent", "p2p_edit")
    OUTPUT_TOOLTIPS = (
        "The model; with an embedding VAE it draws the embeddings while sampling (put it after Apply Inversion).",
        "One conditioning item per latent item.",
        "The latent's first item repeated, all with the same noise (batch_index).",
        "The P2P edit with its edited prompts repeated (connect it to P2P Attention Control); unchanged without one.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": (
                    "The model to sample with (after Apply Inversion when varying an inversion's null "
                    "texts).")}),
                "positive": ("CONDITIONING", {"tooltip": (
                    "One prompt, or the batch from P2P Prompts (then connect p2p_edit).")}),
                "latent": ("LATENT", {"tooltip": (
                    "Its first item is used for every variation (e.g. the inverted latent).")}),
                "mode": (MODES, {"default": "token noise", "tooltip": (
                    "token noise: Gaussian noise on chosen tokens, one draw per item; embedding VAE: a draw "
                    "from the VAE per item and step.")}),
                "count": ("INT", {"default": 4, "min": 1, "max": 256, "tooltip": (
                    "Variations (per edited prompt with a p2p_edit).")}),
                "seed": ("INT", {
                    "default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True,
                    "tooltip": "Item i draws from seed and i: the same seed gives the same variations."}),
                "scale": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": (
                    "Token noise: noise norm relative to each token's norm. Embedding VAE: temperature of "
                    "the latent noise (0: the mean).")}),
                "words": ("STRING", {"default": "", "tooltip": (
                    "Token noise: the words to perturb, comma-separated. Empty: the edited words of a "
                    "p2p_edit, or every column of a plain prompt.")}),
            },
            "optional": {
                "p2p_edit": (P2P_EDIT, {"tooltip": (
                    "From P2P Prompts (or P2P Reweight / Local Blend) when positive is a P2P batch: the "
                    "edits are varied, the source is kept.")}),
                "embedding_vae": (EMBEDDING_VAE, {"tooltip": (
                    "For mode 'embedding VAE', from Load Embedding VAE or Train Embedding VAE.")}),
                "clip": ("CLIP", {"tooltip": (
                    "Token noise on words of a plain prompt: the CLIP that encoded it.")}),
                "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": (
                    "Token noise on words of a plain prompt: its text.")}),
            },
        }

    def vary(self, model, positive, latent, mode: str, count: int, seed: int, scale: float, words: str,
             p2p_edit: P2PEdit | None = None, embedding_vae: TrainedEmbeddingVAE | None = None, clip=None, prompt: str = ""):
        if mode not in MODES:
            raise VariationInputError(f"mode: {mode!r} is not one of {MODES}")
        batch = positive[0][0].shape[0]
        if p2p_edit is not None:
            if batch != p2p_edit.batch_size:
                raise VariationInputError(f"positive: it holds {batch} prompts but p2p_edit {p2p_edit.batch_size}; "
                                          "connect the positive and p2p_edit of the same P2P Prompts node")
            edits = len(p2p_edit.targets)
            rows = [0] + [1 + e for _ in range(count) for e in range(edits)]
            p2p_edit = dataclasses.replace(p2p_edit, targets=p2p_edit.targets * count)
            varied = list(range(1, len(rows)))
        else:
            if batch != 1:
                raise VariationInputError(f"positive: it holds {batch} prompts; give one prompt, or connect the "
                                          "p2p_edit of the P2P Prompts node that made this batch")
            rows, varied = [0] * count, list(range(count))
        positive = _repeat_rows(positive, rows)
        latent = repeat_latent(latent, len(rows))
        family = family_of(model)
        unet = family.is_unet  # Wan: token noise as on the joint families (its umT5 columns), no embedding VAE
        if not unet:
            _check_mmdit_request(mode, family.name)
        if mode == "token noise":
            positive = self._token_noise(positive, varied, seed, scale, words, p2p_edit, clip, prompt, unet)
        else:
            model = self._vae_patch(model, positive, varied, seed, scale, embedding_vae)
        return model, positive, latent, p2p_edit

    @staticmethod
    def _token_noise(positive, varied, seed, scale, words, p2p_edit, clip, prompt, unet: bool):
        word_list = split_word_list(words)
        if p2p_edit is not None:
            tokenize = (lambda w: clip_words(clip, w)) if clip is not None else (lambda w: tuple(w.lower().split()))
            columns = {i: _edited_columns(p2p_edit, p2p_edit.targets[i - 1], word_list, tokenize) for i in varied}
            missing = [p2p_edit.targets[i - 1].text for i, c in columns.items() if not c]
            if missing:
                what = f"the words {word_list}" if word_list else "a word that the source lacks"
                raise VariationInputError(f"words: the edited prompt {missing[0]!r} has no {what}; "
                                          "name words of the edited prompt")
        elif word_list:
            if clip is None or not prompt.strip():
                raise VariationInputError("words: to perturb words of a plain prompt, connect its clip and write "
                                          "it in prompt")
            tokens = conditioning_tokens(clip, prompt, clip.tokenize(prompt), positive[0][0].shape[1])
            found = [c for w in word_list for hit in tokens.find(clip_words(clip, w)) for c in hit]
            if not found:
                raise VariationInputError(f"words: none of {word_list} is in the prompt {prompt!r}")
            columns = {i: sorted(set(found)) for i in varied}
        else:
            columns = {i: list(range(positive[0][0].shape[1])) for i in varied}
        out = []
        for cond, extras in positive:
            cond = cond.clone()
            # SDXL's CLIP-L and CLIP-G channels are scaled apart; an MMDiT's context is one encoder's
            # columns after another's (SD3: CLIP-L||G then T5), each token scaled by its own norm
            parts = _encoder_parts(cond, extras) if unet else None
            for i in varied:
                noise = item_noise(cond.shape[1:], seed, i)
                cond[i] = token_noise(cond[i], [c for c in columns[i] if c < cond.shape[1]], scale, noise, parts)
            out.append([cond, extras])
        return out

    @staticmethod
    def _vae_patch(model, positive, varied, seed, temperature, embedding_vae):
        if embedding_vae is None:
            raise VariationInputError("embedding_vae: mode 'embedding VAE' needs one (Load Embedding VAE or "
                                      "Train Embedding VAE)")
        config = embedding_vae.vae.config
        width = positive[0][0].shape[-1]
        if config.dim != width:
            raise VariationInputError(f"embedding_vae: it was trained for {config.dim}-channel embeddings, this "
                                      f"model's text conditioning has {width}; use a VAE trained with this model")
        chunk = COND if embedding_vae.target == "conditional" else UNCOND
        model_sampling = model.get_model_object("model_sampling")
        patch = SampledContextPatch(VAEDraws(embedding_vae.vae, seed, temperature), varied, chunk,
                                    lambda sigma: model_sampling.timestep(sigma))
        patched = model.clone()
        patched.set_model_attn2_patch(patch)
        return patched
