"""Keep Outside Mask with Flux.2's reference images (tiny Flux.2 with the photo as a reference
latent, the stock ReferenceLatent's conditioning; klein at real CFG, dev guidance-distilled at cfg 1),
through the stock KSamplerAdvanced: outside the mask the edit's final latent is the inverted
photo's, inside it is not, an empty mask gives the photo back. On a ComfyUI without Flux.2 (0.3.64)
the family's own test file checks the pack's message instead."""

from __future__ import annotations

import pytest
import torch

from harness import flux2_models
from harness.inversion_runs import rel_err

pytestmark = pytest.mark.comfy

STEPS, SIZE, TEXT = 6, 8, 8
EXACT, MOVED = 1e-5, 1e-3
SETTINGS = {"klein": (False, 2.5, None), "dev": (True, 1.0, 2.5)}  # guidance embedding, cfg, FluxGuidance


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name == "KSamplerAdvanced" else f"PromptEdit{name}"]()


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def flux2(request):
    from harness.comfyui import ensure_comfyui
    from test_family_flux2 import flux2_here

    ensure_comfyui()
    if not flux2_here():  # asserts the pack's "needs ComfyUI 0.3.72" message
        return None
    guidance_embed, cfg, guidance = SETTINGS[request.param]
    return request.param, flux2_models.tiny_flux2_model(guidance_embed=guidance_embed), cfg, guidance


def photo_latent() -> torch.Tensor:
    return torch.randn(1, flux2_models.FLUX2_LATENT_CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


def conditioning(rows: list[int], reference: torch.Tensor, guidance: float | None) -> list:
    """Instructions (one random context per row) with the photo as a reference latent, as
    ReferenceLatent (and FluxGuidance on dev) give them."""
    context = torch.cat([flux2_models.random_conditioning(tokens=TEXT, seed=s)[0][0] for s in rows])
    extra = {"reference_latents": [reference], **({} if guidance is None else {"guidance": guidance})}
    return [[context, extra]]


def edit(flux2, photo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sampled [source, edit] latent of one Keep Outside Mask round on ``photo``."""
    _, model, cfg, guidance = flux2
    negative = conditioning([99], photo, guidance)
    with torch.inference_mode():
        noisy, inversion = node("InvertImage").invert(model, conditioning([1], photo, guidance), negative,
                                                      {"samples": photo}, "direct", "simple", STEPS, cfg, 0, 1e-5)
    applied = node("ApplyInversion").apply(model, inversion)[0]
    kept, latent, _ = node("KeepOutsideMask").apply(applied, inversion, noisy, "mask", mask=mask, threshold=0.3,
                                                    auto_steps=0.34, dilation=0, feathering=0)
    with torch.inference_mode():
        return node("KSamplerAdvanced").sample(kept, "disable", 0, STEPS, cfg, "euler", "simple",
                                               conditioning([1, 2], photo, guidance), negative, latent, 0, 10000,
                                               "disable")[0]["samples"]


def test_flux2_reference_edit_keeps_the_photo_outside_the_mask(flux2):
    if flux2 is None:
        return
    photo = photo_latent()
    mask = torch.zeros(1, SIZE * 8, SIZE * 8)
    mask[..., : SIZE * 4] = 1  # the left half is edited
    out = edit(flux2, photo, mask)
    outside, inside = (slice(SIZE // 2, None), slice(None, SIZE // 2))
    error, moved = rel_err(out[1:, ..., outside], photo[..., outside]), rel_err(out[1:, ..., inside], photo[..., inside])
    print(f"\nflux2 {flux2[0]} keep outside: outside relative error {error:.2e}, inside {moved:.2e}")
    assert rel_err(out[:1], photo) < EXACT and error < EXACT and moved > MOVED


def test_flux2_reference_edit_with_an_empty_mask_is_the_photo(flux2):
    if flux2 is None:
        return
    photo = photo_latent()
    assert rel_err(edit(flux2, photo, torch.zeros(1, SIZE * 8, SIZE * 8))[1:], photo) < EXACT
