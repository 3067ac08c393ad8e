"""Flux.1 Kontext's layout (tiny Flux dev with the photo as a reference latent, guidance-distilled,
cfg 1) edited from its direct inversion, through the stock KSamplerAdvanced: the words' mask of P2P
Local Blend keeps the photo outside exactly (the source item is on the photo's path, and the blend
snaps the edit to it), as Keep Outside Mask does with a MASK."""

from __future__ import annotations

import pytest
import torch

from harness import mmdit_models
from harness.inversion_runs import rel_err

pytestmark = pytest.mark.comfy

STEPS, GUIDANCE, SIZE, TEXT = 6, 2.5, 16, 8
EXACT, MOVED = 1e-5, 1e-3


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name == "KSamplerAdvanced" else f"PromptEdit{name}"]()


@pytest.fixture(scope="module")
def kontext():
    return mmdit_models.tiny_flux_model()


def photo_latent() -> torch.Tensor:
    return torch.randn(1, mmdit_models.MMDIT_LATENT_CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


def conditioning(rows: list[int], reference: torch.Tensor) -> list:
    """Instructions (one random context per row) with Kontext's guidance and the photo as reference."""
    parts = [mmdit_models.random_conditioning(tokens=TEXT, seed=s)[0] for s in rows]
    extra = {"pooled_output": torch.cat([p[1]["pooled_output"] for p in parts]), "guidance": GUIDANCE,
             "reference_latents": [reference]}
    return [[torch.cat([p[0] for p in parts]), extra]]


def prompt(*words: str):
    from comfyui_prompt_edit.attention.tokens import END, PAD, PromptTokens, Word

    strings = (*words, END) + (PAD,) * (TEXT - len(words) - 1)
    return PromptTokens(" ".join(words), strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), TEXT)


def t5_edit():
    from comfyui_prompt_edit.attention.edit_spec import T5_ENCODER, LocalBlend, P2PEdit

    edit = P2PEdit(prompt("a", "red", "cat", "sits"), (prompt("a", "red", "dog", "sits"),), encoder=T5_ENCODER)
    return edit.with_local_blend(LocalBlend((("cat",),), (("dog",),), 0.3, 0.0))


def test_the_words_mask_keeps_the_photo_outside_exactly(kontext, monkeypatch):
    from comfyui_prompt_edit.attention import local_blend

    photo = photo_latent()
    negative = conditioning([99], photo)
    with torch.inference_mode():
        noisy, inversion = node("InvertImage").invert(kontext, conditioning([1], photo), negative, {"samples": photo},
                                                      "direct", "simple", STEPS, 1.0, 0, 1e-5)
    left = torch.zeros(1, 1, SIZE, SIZE)
    left[..., : SIZE // 2] = 1

    def words_on_the_left(maps, selectors, latent_hw, threshold):  # random weights: maps mask all or nothing
        return left

    monkeypatch.setattr(local_blend, "blend_mask", words_on_the_left)
    applied = node("ApplyInversion").apply(kontext, inversion)[0]
    edited = node("P2PAttentionControl").apply(applied, t5_edit(), "replace", 0.0, 0.8, 0.4, "coarse", qk_end=0.5,
                                               mmdit_mechanism="qk")[0]
    batch = {"samples": noisy["samples"].repeat(2, 1, 1, 1)}
    with torch.inference_mode():
        out = node("KSamplerAdvanced").sample(edited, "disable", 0, STEPS, 1.0, "euler", "simple",
                                              conditioning([1, 2], photo), negative, batch, 0, 10000, "disable")[0]["samples"]
    outside, inside = (slice(SIZE // 2, None), slice(None, SIZE // 2))
    error, moved = rel_err(out[1:, ..., outside], photo[..., outside]), rel_err(out[1:, ..., inside], photo[..., inside])
    print(f"\nkontext words mask: outside relative error {error:.2e}, inside {moved:.2e}")
    assert rel_err(out[:1], photo) < EXACT and error < EXACT and moved > MOVED
