"""Every feature of the pack on Qwen-Image through ComfyUI's stock sampling, with a tiny random-weight
Qwen-Image (tests/harness/qwen_image_models.py) and hand-made prompts (its Qwen2.5-VL text encoder
is not built): P2P Attention Control (qk; probabilities: replace, refine, reweight), local blend,
the word maps, Invert Image / Apply Inversion, token-noise variations."""

from __future__ import annotations

import pytest
import torch

from harness import qwen_image_models as qwen
from harness.edit_checks import assert_same
from harness.inversion_runs import rel_err

pytestmark = pytest.mark.comfy

STEPS, SEED, CFG = 6, 7, 2.5
SIZE = 16  # a 16×16 latent: 8×8 = 64 image tokens
TEXT = 7  # context columns of the prompts below: 5 words, <|im_end|>, one pad


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[f"PromptEdit{name}"]()


def prompt(*words: str):
    from comfyui_prompt_edit.attention.tokens import END, PAD, PromptTokens, Word

    strings = (*words, END) + (PAD,) * (TEXT - len(words) - 1)
    return PromptTokens(" ".join(words), strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), TEXT)


SOURCE_WORDS = ("a", "red", "cat", "sits", "here")


def qwen_edit(*targets: tuple[str, ...], **kw):
    from comfyui_prompt_edit.attention.edit_spec import QWEN_IMAGE_ENCODER, P2PEdit

    targets = targets or (("a", "red", "dog", "sits", "here"),)
    return P2PEdit(prompt(*SOURCE_WORDS), tuple(prompt(*t) for t in targets), encoder=QWEN_IMAGE_ENCODER, **kw)


@pytest.fixture(scope="module")
def model():
    return qwen.tiny_qwen_image_model()


def conditioning(seeds: list[int], tokens: int = TEXT) -> list:
    """A P2P-style positive: one random prompt per seed (equal seeds = equal prompts)."""
    return [[torch.cat([qwen.random_conditioning(tokens=tokens, seed=s)[0][0] for s in seeds]), {}]]


def negative(tokens: int = TEXT) -> list:
    return qwen.random_conditioning(tokens=tokens, seed=99)


def batch_latent(batch: int) -> dict:
    return {"samples": qwen.latent(batch, SIZE), "batch_index": [0] * batch}


def sample(model, positive, latent_image, cfg=CFG, negative_=None, steps=STEPS):
    import comfy.sample

    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive,
                                   negative_ if negative_ is not None else negative(), samples, seed=SEED,
                                   disable_pbar=True)


def control(model, edit, mechanism="qk", kind="replace", qk_end=0.5, end=0.8, **kw):
    return node("P2PAttentionControl").apply(model, edit, kind, 0.0, end, 0.4, "coarse", qk_end=qk_end,
                                             mmdit_mechanism=mechanism, **kw)


def test_the_family_row_and_its_blocks(model):
    from comfyui_prompt_edit.families import family_by_id, family_of

    family = family_of(model)
    assert family is family_by_id("qwen_image") and family.real_cfg(model)
    assert family.block_keys(model) == [("double_block", 0), ("double_block", 1)]


@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
def test_equal_prompts_give_the_source_and_the_source_is_plain_sampling(model, mechanism):
    same = qwen_edit(SOURCE_WORDS)
    edited = sample(control(model, same, mechanism, qk_end=1.0)[0], conditioning([1, 1]), batch_latent(2))
    assert_same(edited[1], edited[0])
    assert_same(edited[0], sample(model, conditioning([1]), batch_latent(1))[0])


@pytest.mark.parametrize("mechanism,kind,targets", [
    ("qk", "replace", ()),
    ("probabilities", "replace", ()),
    ("probabilities", "refine", (("a", "red", "fat", "cat", "sits"),)),
    ("probabilities", "reweight", (SOURCE_WORDS,)),
])
def test_the_edit_moves_only_the_edited_item(model, mechanism, kind, targets):
    edit = qwen_edit(*targets)
    if kind == "reweight":
        from comfyui_prompt_edit.attention.edit_spec import Reweight

        edit = edit.with_reweight(Reweight(("cat",), 4.0))
    positive = conditioning([1, 2] if kind != "reweight" else [1, 1])
    plain = sample(model, positive, batch_latent(2))
    edited = sample(control(model, edit, mechanism, kind)[0], positive, batch_latent(2))
    assert_same(edited[0], plain[0])
    change = rel_err(edited[1], plain[1])
    print(f"qwen_image {mechanism} {kind}: relative change of the edited item {change:.3g}")
    assert change > (1e-2 if mechanism == "qk" else 1e-3), change


@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
def test_local_blend_keeps_the_source_outside_and_maps_are_on_image_tokens(model, mechanism, monkeypatch):
    from comfyui_prompt_edit.attention import local_blend
    from comfyui_prompt_edit.attention.edit_spec import LocalBlend

    edit = qwen_edit(local_blend=LocalBlend((("cat",),), (("dog",),), 0.3, 0.0))
    patched, handle = control(model, edit, mechanism)
    half = torch.zeros(1, 1, SIZE, SIZE)
    half[..., : SIZE // 2] = 1
    masks = []

    def left_half(maps, selectors, latent_hw, threshold):  # random weights: any threshold masks all or nothing
        masks.append(maps.shape)
        return half

    monkeypatch.setattr(local_blend, "blend_mask", left_half)
    out = sample(patched, conditioning([1, 2]), batch_latent(2))
    store = handle.store
    assert store.spatial == (SIZE // 2, SIZE // 2) and len(masks) == STEPS
    assert all(m.shape[1] == (SIZE // 2) ** 2 for m in store.per_step.values())  # the 64 image tokens only
    assert float((out[1] - out[0])[..., SIZE // 2:].abs().max()) == 0.0
    assert float((out[1] - out[0])[..., : SIZE // 2].abs().max()) > 0
    (grid,) = node("P2PAttentionMaps").render(handle, batch_latent(2), 1, "input+output", 0.0, 1.0, False, 32, 8)
    assert grid.shape[0] == 1 and grid.shape[-1] == 3


def test_cond_and_uncond_of_different_lengths_run_apart_and_the_source_is_plain_sampling(model):
    edited = sample(control(model, qwen_edit())[0], conditioning([1, 2]), batch_latent(2), negative_=negative(5))
    plain = sample(model, conditioning([1]), batch_latent(1), negative_=negative(5))
    assert_same(edited[0], plain[0])
    assert rel_err(edited[1], plain[0]) > 1e-2


def test_a_padded_text_with_its_mask_keeps_the_source(model):
    """P2P prompts of different lengths are padded, with an attention mask that 0.33.0 turns into
    an additive mask on the joint attention (0.3.64 drops it): every mechanism keeps the source."""
    mask = torch.ones(2, TEXT, dtype=torch.long)
    mask[:, -1] = 0
    positive = [[conditioning([1, 2])[0][0], {"attention_mask": mask}]]
    source = [[positive[0][0][:1], {"attention_mask": mask[:1]}]]
    plain = sample(model, source, batch_latent(1))
    forwards_mask = "attention_mask" in model.model.extra_conds(attention_mask=mask[:1], cross_attn=source[0][0],
                                                                noise=qwen.latent(1, SIZE), device="cpu")
    unmasked = sample(model, [[source[0][0], {}]], batch_latent(1))
    assert torch.equal(plain, unmasked) != forwards_mask  # the mask reaches the attention where the host forwards it
    for mechanism in ("qk", "probabilities"):
        patched, handle = control(model, qwen_edit(), mechanism)
        edited = sample(patched, positive, batch_latent(2))
        assert_same(edited[0], plain[0])
        assert rel_err(edited[1], plain[0]) > 1e-2
        assert handle.store.spatial == (SIZE // 2, SIZE // 2)


# -- inversion ----------------------------------------------------------------------------------------


def photo_latent() -> torch.Tensor:
    return torch.randn(1, qwen.QWEN_LATENT_CHANNELS, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


def invert(model, method, cfg=CFG, negative_=None):
    positive = qwen.random_conditioning(seed=1)
    negative_ = negative_ or negative()
    with torch.inference_mode():
        noisy, inversion = node("InvertImage").invert(model, positive, negative_, {"samples": photo_latent()}, method,
                                                      "simple", STEPS, cfg, 0, 1e-5)
    return positive, negative_, noisy, inversion


def sample_advanced(model, positive, negative_, latent, cfg=CFG):
    import nodes

    with torch.inference_mode():
        return nodes.NODE_CLASS_MAPPINGS["KSamplerAdvanced"]().sample(
            model, "disable", 0, STEPS, cfg, "euler", "simple", positive, negative_, latent, 0, 10000, "disable")[0]["samples"]


def test_direct_inversion_reconstructs_exactly_at_the_familys_cfg(model):
    positive, negative_, noisy, inversion = invert(model, "direct", negative_=negative(5))
    assert noisy["samples"].shape == photo_latent().shape
    patched = node("ApplyInversion").apply(model, inversion)[0]
    error = rel_err(sample_advanced(patched, positive, negative_, noisy), photo_latent())
    print(f"qwen_image direct inversion at cfg {CFG}: relative latent error {error:.3g}")
    assert error < 1e-4
    assert rel_err(sample_advanced(model, positive, negative_, noisy), photo_latent()) > 1e-2


def test_null_text_fast_reconstructs_better_than_ddim(model):
    apply = node("ApplyInversion").apply
    errors = {}
    for method in ("ddim", "null-text fast"):
        positive, negative_, noisy, inversion = invert(model, method)
        errors[method] = rel_err(sample_advanced(apply(model, inversion)[0], positive, negative_, noisy), photo_latent())
    print(f"qwen_image at cfg {CFG}: relative latent error {errors}")
    assert errors["null-text fast"] < errors["ddim"]


# -- token-noise variations ---------------------------------------------------------------------------


def test_token_noise_varies_only_the_edited_items(model):
    edit = qwen_edit()
    positive = conditioning([1, 2])
    _, varied, batch, varied_edit = node("StochasticEmbeddings").vary(
        model, positive, {"samples": qwen.latent(1, SIZE)}, "token noise", 2, 0, 0.3, "", edit)
    cond = varied[0][0]
    assert cond.shape[0] == 3 == varied_edit.batch_size == batch["samples"].shape[0]
    assert torch.equal(cond[0], positive[0][0][0])  # the source
    changed = (cond != positive[0][0][[0, 1, 1]]).any(-1)
    assert changed[1].tolist() == changed[2].tolist() == [c == 2 for c in range(TEXT)]  # "dog" only
    assert not torch.equal(cond[1], cond[2])
    out = sample(control(model, varied_edit)[0], varied, batch)
    assert_same(out[0], sample(model, conditioning([1]), batch_latent(1))[0])
