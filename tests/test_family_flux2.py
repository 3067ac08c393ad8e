"""Flux.2 (dev and klein layouts) through ComfyUI's stock sampling with tiny random-weight models
(tests/harness/flux2_models.py): P2P Attention Control (qk and probabilities), local blend, maps,
Invert Image / Apply Inversion and token noise. The model left-pads every context with zeros to
512 columns, so the prompts' columns sit at the end. On a ComfyUI without Flux.2 (0.3.64) each test
checks the pack's message naming the version that adds it instead."""

from __future__ import annotations

import pytest
import torch

from harness import flux2_models
from harness.inversion_runs import rel_err

pytestmark = pytest.mark.comfy

STEPS, SEED, LATENT = 6, 7, 4  # a 4×4 latent at patch 1: 16 image tokens
TEXT = 8  # the prompts' columns; the model sees 504 zero columns, then these


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name.startswith(("K", "PromptEdit")) else f"PromptEdit{name}"]()


def flux2_here() -> bool:
    """Whether this ComfyUI has Flux.2; where it has not, the pack's message says which version adds it."""
    from comfyui_prompt_edit.families import UnsupportedModelError, family_by_id

    try:
        family = family_by_id("flux2")
    except UnsupportedModelError as error:
        assert "Flux.2 models need ComfyUI 0.3.72 or newer" in str(error)
        assert "Update ComfyUI" in str(error)
        return False
    assert family.name == "Flux.2"
    return True


@pytest.fixture(scope="module")
def models():
    from harness.comfyui import ensure_comfyui

    ensure_comfyui()
    if not flux2_here():
        return None
    return {"klein": flux2_models.tiny_flux2_model(guidance_embed=False),
            "dev": flux2_models.tiny_flux2_model(guidance_embed=True)}


def prompt(*words: str):
    from comfyui_prompt_edit.attention.tokens import END, PAD, PromptTokens, Word

    strings = (*words, END) + (PAD,) * (TEXT - len(words) - 1)
    return PromptTokens(" ".join(words), strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), TEXT)


def flux2_edit(words: bool = False, targets: int = 1, **kw):
    """A P2PEdit as P2P Prompts makes it with Flux.2's text encoder; ``words``: with word columns
    (for local blend and maps), else text only (the qk edit needs none)."""
    from comfyui_prompt_edit.attention.edit_spec import FLUX2_ENCODER, P2PEdit
    from comfyui_prompt_edit.attention.tokens import PromptTokens

    if words:
        return P2PEdit(prompt("a", "red", "cat", "sits"), (prompt("a", "red", "dog", "sits"),), encoder=FLUX2_ENCODER, **kw)
    return P2PEdit(PromptTokens.text_only("source"), tuple(PromptTokens.text_only(f"edit {i}") for i in range(targets)),
                   encoder=FLUX2_ENCODER)


def conditioning(rows: list[int], tokens: int = TEXT, guidance: float | None = None) -> list:
    parts = [flux2_models.random_conditioning(tokens=tokens, seed=s)[0][0] for s in rows]
    return [[torch.cat(parts), {} if guidance is None else {"guidance": guidance}]]


def latent(batch: int) -> dict:
    return {"samples": torch.zeros(batch, flux2_models.FLUX2_LATENT_CHANNELS, LATENT, LATENT), "batch_index": [0] * batch}


def sample(model, positive, latent_image, cfg, negative=None):
    import comfy.sample

    negative = negative or conditioning([99], tokens=5)
    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, STEPS, cfg, "euler", "simple", positive, negative, samples,
                                   seed=SEED, disable_pbar=True)


def control(model, edit, mechanism="qk", kind="replace", qk_end=0.5):
    return node("P2PAttentionControl").apply(model, edit, kind, 0.0, 0.8, 0.4, "coarse", qk_end=qk_end,
                                             mmdit_mechanism=mechanism)


def relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


CASES = [("klein", 2.5), ("dev", 1.0)]  # real CFG without a guidance embedding; guidance-distilled at cfg 1


def test_the_family_row_and_its_version():
    from harness.comfyui import ensure_comfyui

    ensure_comfyui()
    if flux2_here():
        from comfyui_prompt_edit.families import family_of

        klein, dev = flux2_models.tiny_flux2_model(guidance_embed=False), flux2_models.tiny_flux2_model()
        assert family_of(klein).real_cfg(klein) and not family_of(dev).real_cfg(dev)
        assert family_of(dev).id == "flux2" and family_of(dev).pads_text_left_to == 512


@pytest.mark.parametrize("which,cfg", CASES)
@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
def test_equal_prompts_give_the_source_and_the_source_is_plain_sampling(models, which, cfg, mechanism):
    if models is None:
        return
    model = models[which]
    patched, _ = control(model, flux2_edit(words=True), mechanism)
    edited = sample(patched, conditioning([1, 1]), latent(2), cfg)
    plain = sample(model, conditioning([1]), latent(1), cfg)
    torch.testing.assert_close(edited[1], edited[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(edited[0], plain[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("which,cfg", CASES)
@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
def test_the_edit_moves_the_edited_item_and_keeps_the_source(models, which, cfg, mechanism):
    if models is None:
        return
    model = models[which]
    positive = conditioning([1, 2])
    plain = sample(model, positive, latent(2), cfg)
    edited = sample(control(model, flux2_edit(words=True), mechanism)[0], positive, latent(2), cfg)
    torch.testing.assert_close(edited[0], plain[0], atol=1e-5, rtol=0)
    change = relative(edited[1], plain[1])
    print(f"flux2 {which} {mechanism}: edited item moved by {change:.3g} relative")
    assert change > 1e-3


def test_the_model_sees_512_left_padded_columns_and_maps_read_the_prompts_columns(models):
    """Every joint attention is 512 text + 16 image tokens; the maps of the words are the image
    queries' probabilities on the last TEXT columns (the prompts' own), not on the zero pads."""
    if models is None:
        return
    model = models["klein"].clone()
    lengths = []

    def capture(func, *args, **kwargs):
        opts = kwargs.get("transformer_options") or {}
        lengths.append((args[0].shape[2], opts.get("block_type"), tuple(opts.get("img_slice") or ())))
        return func(*args, **kwargs)

    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = capture
    patched, handle = control(model, flux2_edit(words=True))
    sample(patched, conditioning([1, 2]), latent(2), 2.5)
    assert {length for length, _, _ in lengths} == {512 + LATENT * LATENT}
    assert {s for _, kind, s in lengths if kind == "single"} == {(512, 512 + LATENT * LATENT)}
    store = handle.store
    assert store.columns == (0, 1, 2, 3, 4) and store.spatial == (LATENT, LATENT)
    maps = store.average(("joint",))
    assert maps.shape[0] == 2 and torch.isfinite(maps).all() and float(maps.sum()) > 0


def test_maps_equal_the_softmax_on_the_prompts_columns_after_the_pads():
    from comfyui_prompt_edit.attention.mmdit_maps import PromptColumns, image_text_probabilities, one_hot_values

    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 512 + 16, 8), torch.randn(1, 2, 512 + 16, 8)
    values = one_hot_values((0, 3), TEXT, 512, 512 + 16, q.device, q.dtype, PromptColumns(offset=512 - TEXT))
    p = (q @ k.transpose(-1, -2) * 8 ** -0.5).softmax(-1)[:, :, 512:]
    expected = p[..., [512 - TEXT, 512 - TEXT + 3]].mean(1)
    torch.testing.assert_close(image_text_probabilities(q, k, values, 512), expected)


def test_local_blend_confines_the_edit(models, monkeypatch):
    if models is None:
        return
    from comfyui_prompt_edit.attention import local_blend
    from comfyui_prompt_edit.attention.edit_spec import LocalBlend

    model = models["klein"]
    edit = flux2_edit(words=True).with_local_blend(LocalBlend((("cat",),), (("dog",),), 0.3, 0.0))
    half = torch.zeros(1, 1, LATENT, LATENT)
    half[..., : LATENT // 2] = 1
    seen = []

    def left_half(maps, selectors, latent_hw, threshold):  # tiny random maps mask all or nothing
        seen.append(maps.shape)
        return half

    monkeypatch.setattr(local_blend, "blend_mask", left_half)
    positive = conditioning([1, 2])
    out = sample(control(model, edit)[0], positive, latent(2), 2.5)
    assert len(seen) == STEPS
    assert float((out[1] - out[0])[..., LATENT // 2:].abs().max()) == 0.0
    assert float((out[1] - out[0])[..., : LATENT // 2].abs().max()) > 1e-3


def test_reference_tokens_are_never_edited(models):
    """With a reference latent (Flux.2's 'index' method) the joint sequence is [text, image, ref]
    and the single blocks' img_slice spans the refs: only the image tokens take the source's."""
    if models is None:
        return
    import comfy.model_base  # noqa: F401

    model = models["klein"].clone()
    calls = []

    def capture(func, *args, **kwargs):
        calls.append((args[0].clone(), (kwargs.get("transformer_options") or {}).get("cond_or_uncond")))
        return func(*args, **kwargs)

    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = capture
    ref = torch.randn(1, 128, 2, 2, generator=torch.Generator().manual_seed(4))
    positive = conditioning([1, 2])
    positive[0][1]["reference_latents"] = [ref]
    sample(control(model, flux2_edit(), qk_end=1.0)[0], positive, latent(2), 1.0)
    image, refs = 16, 4
    joint = [q for q, _ in calls if q.shape[2] == 512 + image + refs]
    assert joint
    for q in joint:
        assert torch.equal(q[1, :, 512:512 + image], q[0, :, 512:512 + image])
    # the reference tokens are each item's own (they differ once the texts have mixed into them)
    assert sum(not torch.equal(q[1, :, 512 + image:], q[0, :, 512 + image:]) for q in joint) > len(joint) // 2


def test_flux_kv_cache_is_refused_by_name(models):
    """Flux KV Cache drops the reference tokens after the first step: the edit refuses it, before or after."""
    if models is None:
        return
    import nodes

    from comfyui_prompt_edit.families import UnsupportedModelError

    cached = nodes.NODE_CLASS_MAPPINGS["FluxKVCache"]().execute(models["klein"])[0]
    with pytest.raises(UnsupportedModelError, match="Flux KV Cache"):
        control(cached, flux2_edit())
    after = nodes.NODE_CLASS_MAPPINGS["FluxKVCache"]().execute(control(models["klein"], flux2_edit())[0])[0]
    with pytest.raises(Exception, match="Flux KV Cache"):
        sample(after, conditioning([1, 2]), latent(2), 1.0)


def photo(seed: int = 5) -> torch.Tensor:
    return torch.randn(1, flux2_models.FLUX2_LATENT_CHANNELS, LATENT, LATENT, generator=torch.Generator().manual_seed(seed))


def invert(model, method, cfg):
    positive, negative = conditioning([1]), conditioning([2])  # 'null-text fast' asks for equal lengths
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(model, positive, negative, {"samples": photo()}, method,
                                                               "simple", STEPS, cfg, 0, 1e-5)
    return positive, negative, noisy, inversion


@pytest.mark.parametrize("which,cfg", CASES)
def test_direct_inversion_reconstructs_exactly(models, which, cfg):
    if models is None:
        return
    model = models[which]
    positive, negative, noisy, inversion = invert(model, "direct", cfg)
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    with torch.inference_mode():
        out = node("KSamplerAdvanced").sample(patched, "disable", 0, STEPS, cfg, "euler", "simple", positive, negative,
                                              noisy, 0, 10000, "disable")[0]["samples"]
    error = rel_err(out, photo())
    print(f"flux2 {which} direct inversion at cfg {cfg}: relative latent error {error:.2e}")
    assert error < 1e-4


def test_null_text_is_refused_on_a_guidance_distilled_file_and_runs_on_real_cfg(models):
    if models is None:
        return
    from comfyui_prompt_edit.inversion.comfy_patch import InversionMismatchError

    for method in ("null-text", "null-text fast", "negative-prompt"):
        with pytest.raises(InversionMismatchError, match="this Flux.2 file is guidance-distilled: it has a guidance"):
            invert(models["dev"], method, 1.0)
    for method in ("null-text", "null-text fast"):
        _, _, noisy, inversion = invert(models["klein"], method, 2.5)
        assert torch.isfinite(noisy["samples"]).all() and inversion is not None
    _, _, ddim, _ = invert(models["dev"], "ddim", 1.0)
    assert torch.isfinite(ddim["samples"]).all()


def test_token_noise_varies_each_prompt(models):
    if models is None:
        return
    positive = conditioning([1])
    out = node("PromptEditStochasticEmbeddings").vary(models["klein"], positive, latent(1), "token noise", 2, 0, 0.3, "",
                                                      None)
    varied = out[1][0][0]
    assert varied.shape[0] == 2 and not torch.equal(varied[0], varied[1])
