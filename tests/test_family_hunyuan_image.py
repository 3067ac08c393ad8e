"""HunyuanImage 2.1 through ComfyUI's stock sampling, with tiny random-weight models built through
its own classes (tests/harness/hunyuan_image_models.py) and random conditioning: P2P Attention
Control (the qk edit and the probabilities edit), local blend, word maps, Invert Image / Apply
Inversion and token-noise variations. On ComfyUI 0.3.64 the joint attention runs [image, text];
the same tests hold there."""

from __future__ import annotations


import pytest
import torch

from harness import comfyui, edit_checks, hunyuan_image_models as hy
from harness.attention_capture import with_capture
from harness.inversion_runs import node as inversion_node, rel_err

pytestmark = pytest.mark.comfy

STEPS, SEED, LATENT = 6, 7, 8  # an 8×8 latent: 64 image tokens (patch [1, 1])
TEXT = 8  # Qwen columns of the random prompts
IMAGE_TOKENS = LATENT * LATENT


@pytest.fixture(scope="module")
def real_cfg_model():
    return hy.tiny_hunyuan_image_model(guidance_embed=False)


@pytest.fixture(scope="module")
def guidance_model():
    return hy.tiny_hunyuan_image_model(guidance_embed=True)


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[f"PromptEdit{name}"]()


def hand_made_prompt(words: tuple[str, ...], byt5_text: str = ""):
    """PromptTokens laid out as a random context's columns: the Qwen part (one word per column,
    then <|im_end|> and pads to TEXT columns) and, for quoted text, the ByT5 part after it (one
    column per byte, then </s>), as HunyuanImage appends ByT5's tokens to the Qwen ones."""
    from comfyui_prompt_edit.attention.tokens import END, PAD, PromptTokens, Word

    strings = (*words, END) + (PAD,) * (TEXT - len(words) - 1)
    qwen = PromptTokens(" ".join(words), strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), TEXT)
    if not byt5_text:
        return qwen
    byt5 = PromptTokens(byt5_text, (*byt5_text, END), (Word(byt5_text, tuple(range(len(byt5_text)))),),
                        len(byt5_text) + 1)
    return PromptTokens.joined(f'{qwen.text} "{byt5_text}"', [qwen, byt5])


SOURCE_WORDS, EDITED_WORDS = ("a", "red", "cat", "sits"), ("a", "red", "dog", "sits")


def hunyuan_edit(targets: int = 1, edited_words: tuple[str, ...] = EDITED_WORDS, byt5_text: str = ""):
    from comfyui_prompt_edit.attention.edit_spec import HUNYUAN_IMAGE_ENCODER, P2PEdit

    return P2PEdit(hand_made_prompt(SOURCE_WORDS, byt5_text),
                   tuple(hand_made_prompt(edited_words, byt5_text) for _ in range(targets)),
                   encoder=HUNYUAN_IMAGE_ENCODER)


def batch_conditioning(rows: list[int], byt5_tokens: int = 0, guidance: float | None = None) -> list:
    """A P2P-style positive: one random prompt per seed in ``rows`` (equal seeds = equal prompts)."""
    parts = [hy.random_conditioning(seed=s, byt5_tokens=byt5_tokens, guidance=guidance)[0] for s in rows]
    extra = dict(parts[0][1])
    if byt5_tokens:
        extra["conditioning_byt5small"] = torch.cat([p[1]["conditioning_byt5small"] for p in parts])
    return [[torch.cat([p[0] for p in parts]), extra]]


def negative_conditioning(guidance: float | None = None) -> list:
    return hy.random_conditioning(seed=99, guidance=guidance)


def latent(batch: int) -> dict:
    return {"samples": torch.zeros(batch, hy.HUNYUAN_LATENT_CHANNELS, LATENT, LATENT), "batch_index": [0] * batch}


def sample(model, positive, latent_image, cfg=2.5, negative=None):
    import comfy.sample

    negative = negative_conditioning() if negative is None else negative
    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, STEPS, cfg, "euler", "simple", positive, negative, samples,
                                   seed=SEED, disable_pbar=True)


def control(model, edit, mechanism="qk", kind="replace", qk_end=0.5, **kw):
    return node("P2PAttentionControl").apply(model, edit, kind, 0.0, 0.8, 0.4, "coarse", qk_end=qk_end,
                                             mmdit_mechanism=mechanism, **kw)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# the harness's float32 roundoff: batch sizes take different matmul kernels (a tighter 1e-6 held on
# one CPU and failed by 1.3e-8 on another)
assert_same = edit_checks.assert_same


# -- the family ------------------------------------------------------------------------------------


def test_the_family_row_says_real_cfg_per_file(real_cfg_model, guidance_model):
    from comfyui_prompt_edit.families import family_of

    family = family_of(real_cfg_model)
    assert family.id == "hunyuan_image" and family is family_of(guidance_model)
    assert family.real_cfg(real_cfg_model) and not family.real_cfg(guidance_model)
    assert family.block_keys(real_cfg_model) == [("double_block", 0), ("single_block", 0), ("single_block", 1)]
    # 0.3.64 runs the joint attention image first; 0.33.0 text first (and says so with img_slice)
    assert family.image_first(real_cfg_model) == host_runs_image_first()


# -- P2P Attention Control: the qk edit ------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
def test_equal_prompts_give_the_source_and_the_source_is_plain_sampling(real_cfg_model, mechanism):
    positive = batch_conditioning([1, 1])
    edit = hunyuan_edit(edited_words=SOURCE_WORDS)
    edited = sample(control(real_cfg_model, edit, mechanism, qk_end=1.0)[0], positive, latent(2))
    assert_same(edited[1], edited[0])
    plain = sample(real_cfg_model, batch_conditioning([1]), latent(1))
    assert_same(edited[0], plain[0])


@pytest.mark.parametrize("mechanism", ["qk", "probabilities"])
def test_the_edit_moves_the_edited_item_and_keeps_the_source(real_cfg_model, mechanism):
    positive = batch_conditioning([1, 2])
    plain = sample(real_cfg_model, positive, latent(2))
    edited = sample(control(real_cfg_model, hunyuan_edit(), mechanism)[0], positive, latent(2))
    assert_same(edited[0], plain[0])
    change = relative(edited[1], plain[1])
    print(f"hunyuan_image {mechanism}: edited item moved by {change:.3g} relative")
    assert change > 1e-3  # 1000× the tolerance the source is held to


def test_the_refiner_calls_are_untouched_and_the_joint_ones_edited(real_cfg_model):
    positive = batch_conditioning([1, 2])
    plain_model, plain_calls = with_capture(real_cfg_model)
    sample(plain_model, positive, latent(2), cfg=1.0)
    edited_model, edited_calls = with_capture(real_cfg_model)
    sample(control(edited_model, hunyuan_edit(), qk_end=1.0)[0], positive, latent(2), cfg=1.0)
    assert len(plain_calls.calls) == len(edited_calls.calls)
    refiner = [(p, e) for p, e in zip(plain_calls.calls, edited_calls.calls) if p.length == TEXT]
    joint = [(p, e) for p, e in zip(plain_calls.calls, edited_calls.calls) if p.length == TEXT + IMAGE_TOKENS]
    assert len(refiner) == 2 * STEPS and len(joint) == 3 * STEPS  # 2 refiner blocks; 1 double + 2 single
    assert all(torch.equal(p.q, e.q) for p, e in refiner)
    # the capture runs inside the edit in the joint blocks: there it sees the source's image queries
    image = slice(TEXT, None) if not host_runs_image_first() else slice(0, IMAGE_TOKENS)
    for _, (step, _, _, q, k) in joint:
        assert torch.equal(q[1, :, image], q[0, :, image]) and torch.equal(k[1, :, image], k[0, :, image])
        assert not torch.equal(q[1], q[0])  # the text is each item's own


def host_runs_image_first() -> bool:
    """Whether this ComfyUI's HunyuanImage runs its joint attention [image, text] (0.3.64's Flux
    blocks take ``flipped_img_txt``), read from the host, not from the pack's family row."""
    import inspect

    import comfy.ldm.flux.layers as layers

    return "flipped_img_txt" in inspect.signature(layers.DoubleStreamBlock.__init__).parameters


# -- local blend and word maps ----------------------------------------------------------------------


def test_local_blend_keeps_the_source_outside_the_words_region(real_cfg_model, monkeypatch):
    from comfyui_prompt_edit.attention import local_blend
    from comfyui_prompt_edit.attention.edit_spec import LocalBlend

    edit = hunyuan_edit().with_local_blend(LocalBlend((("cat",),), (("dog",),), 0.3, 0.0))
    patched, handle = control(real_cfg_model, edit)
    half = torch.zeros(1, 1, LATENT, LATENT)
    half[..., : LATENT // 2] = 1
    real_mask, real_masks = local_blend.blend_mask, []

    def left_half(maps, selectors, latent_hw, threshold):  # the maps' own mask is kept to look at
        real_masks.append(real_mask(maps, selectors, latent_hw, threshold))
        return half

    monkeypatch.setattr(local_blend, "blend_mask", left_half)
    positive = batch_conditioning([1, 2])
    out = sample(patched, positive, latent(2))
    assert len(real_masks) == STEPS and real_masks[-1].shape == (1, 1, LATENT, LATENT)
    assert handle.store.spatial == (LATENT, LATENT)
    assert float((out[1] - out[0])[..., LATENT // 2:].abs().max()) == 0.0  # outside: the source's
    assert float((out[1] - out[0])[..., : LATENT // 2].abs().max()) > 1e-2  # inside: the edit's own
    unblended = sample(control(real_cfg_model, hunyuan_edit())[0], positive, latent(2))
    assert torch.equal(out[0], unblended[0]) and not torch.equal(out[1], unblended[1])


def test_the_word_maps_are_the_double_blocks_image_to_text_probabilities(real_cfg_model):
    """The recorded maps, against the softmax of the q, k the host attention got (in its own order:
    on 0.3.64 image first), for the source item of every step."""
    capturing, capture = with_capture(real_cfg_model)
    patched, handle = control(capturing, hunyuan_edit(), qk_end=0.0)  # records, edits nothing
    sample(patched, batch_conditioning([1, 2]), latent(2), cfg=1.0)
    columns = list(handle.store.columns)
    assert columns == [0, 1, 2, 3, 4]  # the four words and <|im_end|>
    image_first = host_runs_image_first()
    double_calls = [c for c in capture.calls if c.length == TEXT + IMAGE_TOKENS][::3]  # double, single, single
    assert [c[0] for c in double_calls] == list(range(STEPS))
    rows, text = (slice(0, IMAGE_TOKENS), IMAGE_TOKENS) if image_first else (slice(TEXT, None), 0)
    for step, _, _, q, k in double_calls:
        scores = (q[0] @ k[0].transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)  # [H, L, L]
        expected = scores[:, rows][..., [text + c for c in columns]].mean(0)
        torch.testing.assert_close(handle.store.per_step[(step, "joint")][0], expected, rtol=1e-4, atol=1e-6)
    (grid,) = node("P2PAttentionMaps").render(handle, latent(2), 1, "input+output", 0.0, 1.0, False, 32, 8)
    assert grid.shape[0] == 1 and grid.shape[-1] == 3


# -- quoted text: ByT5 columns after the Qwen ones ---------------------------------------------------


def test_a_prompt_with_byt5_tokens_keeps_the_source_and_edits_the_edit(real_cfg_model):
    """Cond 8 Qwen + 5 ByT5 columns, uncond 8: separate forwards; the P2P prompts count both parts."""
    byt5 = 5
    positive = batch_conditioning([1, 2], byt5_tokens=byt5)
    edit = hunyuan_edit(byt5_text="SALE")  # 4 bytes and </s>
    assert edit.num_columns == TEXT + byt5
    capturing, capture = with_capture(real_cfg_model)
    plain = sample(capturing, positive, latent(2))
    # the refiner runs on the Qwen columns only; ByT5's join the text after it
    assert {c.length for c in capture.calls if c[1] == (0,)} == {TEXT, TEXT + byt5 + IMAGE_TOKENS}
    assert {c.length for c in capture.calls if c[1] == (1,)} == {TEXT, TEXT + IMAGE_TOKENS}  # the uncond alone
    for mechanism in ("qk", "probabilities"):
        patched, handle = control(real_cfg_model, edit, mechanism)
        edited = sample(patched, positive, latent(2))
        assert_same(edited[0], plain[0])
        assert relative(edited[1], plain[1]) > 1e-3
        assert handle.store.running.shape[-1] == len(handle.store.columns)  # maps over both parts' words
    alone = sample(real_cfg_model, batch_conditioning([1], byt5_tokens=byt5), latent(1))
    assert_same(plain[0], alone[0])


# -- the guidance-distilled file ---------------------------------------------------------------------


def test_the_guidance_file_edits_at_cfg_1(guidance_model):
    positive = batch_conditioning([1, 2], guidance=3.5)
    negative = negative_conditioning(guidance=3.5)
    plain = sample(guidance_model, positive, latent(2), cfg=1.0, negative=negative)
    edited = sample(control(guidance_model, hunyuan_edit())[0], positive, latent(2), cfg=1.0, negative=negative)
    assert_same(edited[0], plain[0])
    assert relative(edited[1], plain[1]) > 1e-3


# -- inversion ---------------------------------------------------------------------------------------

INVERSION_STEPS = 6


def photo_latent(seed: int = 5) -> torch.Tensor:
    """A LATENT-space 'photo' [1, 64, 8, 8] (random: the models are random too)."""
    return torch.randn(1, hy.HUNYUAN_LATENT_CHANNELS, LATENT, LATENT, generator=torch.Generator().manual_seed(seed))


def invert(model, latent_samples, method, cfg, guidance=None):
    positive, negative = hy.random_conditioning(seed=1, guidance=guidance), negative_conditioning(guidance)
    with torch.inference_mode():
        noisy, inversion = inversion_node("PromptEditInvertImage").invert(
            model, positive, negative, {"samples": latent_samples}, method, "simple", INVERSION_STEPS, cfg, 2, 1e-5)
    return positive, negative, noisy, inversion


def sample_advanced(model, positive, negative, noisy, cfg):
    with torch.inference_mode():
        return inversion_node("KSamplerAdvanced").sample(model, "disable", 0, INVERSION_STEPS, cfg, "euler", "simple",
                                                         positive, negative, noisy, 0, 10000, "disable")[0]["samples"]


@pytest.mark.parametrize("file, cfg", [("real_cfg", 2.5), ("guidance", 1.0)])
def test_direct_inversion_reconstructs_exactly(real_cfg_model, guidance_model, file, cfg):
    model = real_cfg_model if file == "real_cfg" else guidance_model
    guidance = 3.5 if file == "guidance" else None
    photo = photo_latent()
    positive, negative, noisy, inversion = invert(model, photo, "direct", cfg, guidance)
    patched = inversion_node("PromptEditApplyInversion").apply(model, inversion)[0]
    error = rel_err(sample_advanced(patched, positive, negative, noisy, cfg), photo)
    print(f"hunyuan_image direct inversion ({file}, cfg {cfg}): relative latent error {error:.2g}")
    assert error < 1e-4
    assert rel_err(sample_advanced(model, positive, negative, noisy, cfg), photo) > 1e-2  # the correction's doing


@pytest.mark.parametrize("method", ["null-text", "null-text fast", "negative-prompt"])
def test_null_text_methods_are_refused_on_the_guidance_file(guidance_model, method):
    with pytest.raises(ValueError, match=rf"method: '{method}' swaps the unconditional context .*HunyuanImage 2.1 "
                                         r"does not run \(this HunyuanImage 2.1 file is guidance-distilled"):
        invert(guidance_model, photo_latent(), method, 3.0, guidance=3.5)


def test_null_text_inversion_runs_on_the_real_cfg_file(real_cfg_model):
    photo, cfg = photo_latent(), 2.5
    positive, negative, noisy, inversion = invert(real_cfg_model, photo, "null-text fast", cfg)
    assert not torch.equal(inversion.unconds[0], negative[0][0][0])  # optimised per step
    apply = inversion_node("PromptEditApplyInversion").apply
    error = rel_err(sample_advanced(apply(real_cfg_model, inversion)[0], positive, negative, noisy, cfg), photo)
    _, _, ddim_noisy, ddim = invert(real_cfg_model, photo, "ddim", cfg)
    ddim_error = rel_err(sample_advanced(apply(real_cfg_model, ddim)[0], positive, negative, ddim_noisy, cfg), photo)
    print(f"hunyuan_image null-text fast at cfg {cfg}: relative latent error {error:.3g} (ddim alone {ddim_error:.3g})")
    assert error < ddim_error


# -- token-noise variations --------------------------------------------------------------------------


def test_token_noise_variations_sample_in_one_batch_with_the_source_kept(real_cfg_model):
    positive = batch_conditioning([1, 2])
    vary = node("StochasticEmbeddings").vary
    _, varied, batch, varied_edit = vary(real_cfg_model, positive, latent(1), "token noise", 2, 0, 0.3, "", hunyuan_edit())
    assert varied[0][0].shape[0] == 3 == varied_edit.batch_size
    assert torch.equal(varied[0][0][0], positive[0][0][0])
    dog = 2  # the column of the word the edit adds
    changed = (varied[0][0][1:] != positive[0][0][1:2]).any(-1)
    assert changed[:, dog].all() and changed.sum() == 2
    out = sample(control(real_cfg_model, varied_edit)[0], varied, batch)
    plain = sample(real_cfg_model, batch_conditioning([1]), latent(1))
    assert_same(out[0], plain[0])
    assert relative(out[1], out[2]) > 1e-3


# -- a file through ComfyUI's loader -----------------------------------------------------------------


def test_a_tiny_file_loads_through_the_diffusion_model_loader_and_edits(tmp_path):
    """UNETLoader's comfy.sd.load_diffusion_model on a random-weight file: detection reads hidden 128
    (one head of 128, axes [64, 64]) and no guidance_in back, and the pack edits what it loaded."""
    import comfy.sd
    import comfy.utils

    from comfyui_prompt_edit.families import family_of

    built = hy.tiny_hunyuan_image_model(hidden=128, heads=1, axes_dim=(64, 64))
    path = tmp_path / "hunyuan_image_tiny.safetensors"
    comfy.utils.save_torch_file(built.model.diffusion_model.state_dict(), str(path))
    loaded = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.float32})
    family = family_of(loaded)
    assert family.id == "hunyuan_image" and family.real_cfg(loaded)
    assert loaded.model.diffusion_model.hidden_size == 128
    positive = batch_conditioning([1, 2])
    plain = sample(loaded, positive, latent(2))
    edited = sample(control(loaded, hunyuan_edit())[0], positive, latent(2))
    assert_same(edited[0], plain[0])
    assert relative(edited[1], plain[1]) > 1e-3
