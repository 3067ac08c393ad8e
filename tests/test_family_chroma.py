"""Chroma and Chroma Radiance through ComfyUI's stock sampling with tiny random-weight models
(tests/harness/chroma_models.py): P2P Attention Control (qk and probabilities), local blend, maps,
Invert Image / Apply Inversion and token noise, on both hosts (0.3.64's Chroma passes no
block_index / img_slice and needs a pooled vector in its conditioning)."""

from __future__ import annotations

import pytest
import torch

from harness import chroma_models
from harness.inversion_runs import rel_err

pytestmark = pytest.mark.comfy

STEPS, SEED, CFG = 6, 7, 2.5
TEXT = 8
KINDS = {"chroma": (chroma_models.tiny_chroma_model, (16, 8, 8), 16),  # 8×8 latent at patch 2: 16 tokens
         "radiance": (chroma_models.tiny_chroma_radiance_model, (3, 64, 64), 16)}  # 64² RGB at patch 16


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name.startswith(("K", "PromptEdit")) else f"PromptEdit{name}"]()


@pytest.fixture(scope="module")
def models():
    from harness.comfyui import ensure_comfyui

    ensure_comfyui()
    return {kind: build() for kind, (build, _, _) in KINDS.items()}


def prompt(*words: str):
    from comfyui_prompt_edit.attention.tokens import END, PAD, PromptTokens, Word

    strings = (*words, END) + (PAD,) * (TEXT - len(words) - 1)
    return PromptTokens(" ".join(words), strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), TEXT)


def t5_edit(**kw):
    """A P2PEdit as P2P Prompts makes it with Chroma's T5, with word columns (local blend, maps)."""
    from comfyui_prompt_edit.attention.edit_spec import T5_ENCODER, P2PEdit

    return P2PEdit(prompt("a", "red", "cat", "sits"), (prompt("a", "red", "dog", "sits"),), encoder=T5_ENCODER, **kw)


def conditioning(rows: list[int], tokens: int = TEXT) -> list:
    parts = [chroma_models.random_conditioning(tokens=tokens, seed=s)[0] for s in rows]
    return [[torch.cat([p[0] for p in parts]), {"pooled_output": torch.cat([p[1]["pooled_output"] for p in parts])}]]


def latent(kind: str, batch: int) -> dict:
    return {"samples": torch.zeros(batch, *KINDS[kind][1]), "batch_index": [0] * batch}


def sample(model, positive, latent_image, cfg=CFG, negative_tokens=5):
    import comfy.sample

    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, STEPS, cfg, "euler", "simple", positive,
                                   conditioning([99], tokens=negative_tokens), samples, seed=SEED, disable_pbar=True)


def control(model, edit, mechanism="qk", kind="replace", qk_end=0.5):
    return node("P2PAttentionControl").apply(model, edit, kind, 0.0, 0.8, 0.4, "coarse", qk_end=qk_end,
                                             mmdit_mechanism=mechanism)


def assert_same(actual, expected, tol=1e-4):
    """Equal up to float rounding (measured: ≤ 1e-5 relative; the batch size changes the kernels'
    summation order, the probabilities mechanism recomputes the attention in fp32), far below what
    an edit moves (≥ 0.3 relative on these models)."""
    assert relative(actual, expected) < tol


def relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


def test_both_models_are_chroma_with_real_cfg(models):
    from comfyui_prompt_edit.families import family_of

    for model in models.values():
        family = family_of(model)
        assert family.id == "chroma" and family.real_cfg(model) and family.is_joint


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
@pytest.mark.parametrize("negative_tokens", [TEXT, 5])  # cond and uncond batched, or run apart (8 vs 5)
def test_equal_prompts_give_the_source_and_the_source_is_plain_sampling(models, kind, mechanism, negative_tokens):
    model = models[kind]
    patched, _ = control(model, t5_edit(), mechanism)
    edited = sample(patched, conditioning([1, 1]), latent(kind, 2), negative_tokens=negative_tokens)
    plain = sample(model, conditioning([1]), latent(kind, 1), negative_tokens=negative_tokens)
    assert_same(edited[1], edited[0])
    assert_same(edited[0], plain[0])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
def test_the_edit_moves_the_edited_item_and_keeps_the_source(models, kind, mechanism):
    model = models[kind]
    positive = conditioning([1, 2])
    plain = sample(model, positive, latent(kind, 2))
    edited = sample(control(model, t5_edit(), mechanism)[0], positive, latent(kind, 2))
    assert_same(edited[0], plain[0])
    change = relative(edited[1], plain[1])
    print(f"chroma {kind} {mechanism}: edited item moved by {change:.3g} relative")
    assert change > 1e-3


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_maps_lie_on_the_image_grid(models, kind):
    patched, handle = control(models[kind], t5_edit())
    sample(patched, conditioning([1, 2]), latent(kind, 2))
    store = handle.store
    assert store.columns == (0, 1, 2, 3, 4) and store.spatial == (4, 4)
    maps = store.average(("joint",))
    assert maps.shape[0] == 2 and torch.isfinite(maps).all() and float(maps.sum()) > 0


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_local_blend_confines_the_edit(models, kind, monkeypatch):
    from comfyui_prompt_edit.attention import local_blend
    from comfyui_prompt_edit.attention.edit_spec import LocalBlend

    edit = t5_edit().with_local_blend(LocalBlend((("cat",),), (("dog",),), 0.3, 0.0))
    height, width = KINDS[kind][1][1:]
    half = torch.zeros(1, 1, height, width)
    half[..., : width // 2] = 1
    seen = []

    def left_half(maps, selectors, latent_hw, threshold):  # tiny random maps mask all or nothing
        seen.append(latent_hw)
        return half

    monkeypatch.setattr(local_blend, "blend_mask", left_half)
    out = sample(control(models[kind], edit)[0], conditioning([1, 2]), latent(kind, 2))
    assert len(seen) == STEPS
    assert float((out[1] - out[0])[..., width // 2:].abs().max()) == 0.0
    assert float((out[1] - out[0])[..., : width // 2].abs().max()) > 1e-3


def photo(kind: str, seed: int = 5) -> torch.Tensor:
    return torch.randn(1, *KINDS[kind][1], generator=torch.Generator().manual_seed(seed))


def invert(model, kind, method, cfg=CFG):
    positive, negative = conditioning([1]), conditioning([2])
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(model, positive, negative, {"samples": photo(kind)},
                                                               method, "simple", STEPS, cfg, 0, 1e-5)
    return positive, negative, noisy, inversion


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_direct_inversion_reconstructs_exactly(models, kind):
    model = models[kind]
    positive, negative, noisy, inversion = invert(model, kind, "direct")
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    with torch.inference_mode():
        out = node("KSamplerAdvanced").sample(patched, "disable", 0, STEPS, CFG, "euler", "simple", positive, negative,
                                              noisy, 0, 10000, "disable")[0]["samples"]
    error = rel_err(out, photo(kind))
    print(f"chroma {kind} direct inversion at cfg {CFG}: relative error {error:.2e}")
    assert error < 1e-4


def test_null_text_and_ddim_run_on_chroma(models):
    for method in ("null-text", "ddim"):
        _, _, noisy, inversion = invert(models["chroma"], "chroma", method)
        assert torch.isfinite(noisy["samples"]).all() and inversion is not None


def test_token_noise_varies_each_prompt(models):
    out = node("PromptEditStochasticEmbeddings").vary(models["chroma"], conditioning([1]), latent("chroma", 1),
                                                      "token noise", 2, 0, 0.3, "", None)
    varied = out[1][0][0]
    assert varied.shape[0] == 2 and not torch.equal(varied[0], varied[1])
