"""Wan image-to-video through ComfyUI's stock sampling with tiny random-weight models and a tiny
umT5 (tests/harness/wan_models.py), on both hosts: Wan 2.1 I2V (the ``WAN21_I2V`` config: the input
picture's CLIP-vision features become 257 image tokens that each block's cross-attention attends in
a call of its own, before the text call) and a Wan 2.2 A14B I2V expert (the ``WAN21_T2V`` config
with 36 input channels: the image arrives concatenated to the latent). The conditioning carries what
``WanImageToVideo`` sets for a start image (:func:`harness.wan_models.image_to_video_conditioning`).

P2P Attention Control edits the text call and injects self-attention as on text-to-video; the
image call runs as the host's own attention, never edited (its keys and values are bit-equal with
and without the edit). Invert Image 'direct' + Apply Inversion reconstruct an I2V latent."""

from __future__ import annotations

import pytest
import torch

from harness import wan_models
from harness.edit_checks import assert_edit_moves, assert_same, relative_change
from test_family_wan import CFG, STEPS, control, item_conditioning, sample

pytestmark = pytest.mark.comfy

FRAMES = 2
SOURCE = "a photo of a cat riding a bicycle"
TARGET = "a photo of a dog riding a bicycle"
MODELS = {"wan21_i2v": wan_models.tiny_wan21_i2v_model, "wan22_a14b_i2v": wan_models.tiny_wan22_i2v_expert}
# (model, whether the conditioning carries a CLIP-vision output): Wan 2.1 I2V reads one (its usual
# workflow); without it the host's image call attends the whole text context (sliced [:None]); the
# A14B expert has no CLIP-vision embedding, so its workflow connects none, and the host ignores one
# that is connected (its blocks make no image call)
RUNS = {"wan21_i2v": ("wan21_i2v", True), "wan21_i2v_no_clip_vision": ("wan21_i2v", False),
        "wan22_a14b_i2v": ("wan22_a14b_i2v", False), "wan22_a14b_i2v_clip_vision_ignored": ("wan22_a14b_i2v", True)}


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name if name.startswith(("K", "PromptEdit")) else f"PromptEdit{name}"]()


@pytest.fixture(scope="module")
def models():
    from harness.comfyui import ensure_comfyui

    ensure_comfyui()
    return {name: build() for name, build in MODELS.items()}


@pytest.fixture(scope="module")
def clip():
    return wan_models.tiny_umt5_clip()


def latent(batch: int = 1) -> dict:
    return {"samples": torch.zeros(batch, 16, FRAMES, 8, 8)}


def encode(clip, text: str, clip_vision: bool) -> list:
    import nodes

    return wan_models.image_to_video_conditioning(nodes.CLIPTextEncode().encode(clip, text)[0], FRAMES,
                                                  clip_vision=clip_vision)


def prompts(clip, target: str, clip_vision: bool):
    """P2P Prompts' (positive, latent, p2p_edit), the positive then through what WanImageToVideo sets."""
    positive, lat, edit = node("P2PPrompts").build(clip, latent(), SOURCE, target)
    return wan_models.image_to_video_conditioning(positive, FRAMES, clip_vision=clip_vision), lat, edit


def test_wan_i2v_models_are_the_wan_family_image_to_video(models):
    from comfyui_prompt_edit.families import family_of
    from comfyui_prompt_edit.families.wan.variants import IMAGE_TO_VIDEO, wan_variant

    for model in models.values():
        assert family_of(model).id == "wan" and wan_variant(model) == IMAGE_TO_VIDEO
    assert hasattr(models["wan21_i2v"].model.diffusion_model.blocks[0].cross_attn, "k_img")
    assert models["wan22_a14b_i2v"].model.diffusion_model.img_emb is None


def run_inputs(models, clip, run: str, target: str):
    """(model, positive, negative, latent, p2p_edit) of one of RUNS with ``target`` as the edited prompt."""
    model_name, clip_vision = RUNS[run]
    positive, lat, edit = prompts(clip, target, clip_vision)
    return models[model_name], positive, encode(clip, "", clip_vision), lat, edit


@pytest.mark.parametrize("run", sorted(RUNS))
def test_wan_i2v_equal_prompts_give_the_source_and_the_source_is_plain_sampling(models, clip, run):
    model, positive, negative, lat, edit = run_inputs(models, clip, run, SOURCE)
    edited = sample(control(model, edit)[0], positive, negative, lat)
    plain = sample(model, item_conditioning(positive, 0), negative, latent())
    assert_same(edited[1], edited[0])
    assert_same(edited[0], plain[0])
    print(f"wan {run} equal prompts: source vs plain sampling {relative_change(edited[0], plain[0]):.1e} relative")


@pytest.mark.parametrize("run", sorted(RUNS))
def test_wan_i2v_edit_moves_the_edited_item_and_keeps_the_source(models, clip, run):
    model, positive, negative, lat, edit = run_inputs(models, clip, run, TARGET)
    plain = sample(model, positive, negative, lat)
    edited = sample(control(model, edit)[0], positive, negative, lat)
    changes = assert_edit_moves(edited, plain)
    print(f"wan {run} replace: edited item moved by {changes[1]:.3g} relative, source {changes[0]:.1e}")


def recording_override(calls: list, keys: int):
    """Another node's attention override (it runs under the edit, for every kernel call the host
    makes): records ``(q, k, v, out)`` of the calls with ``keys`` keys."""
    def record(func, q, k, v, heads, *args, **kwargs):
        out = func(q, k, v, heads, *args, **kwargs)
        if k.shape[1] == keys:
            calls.append((q.clone(), k.clone(), v.clone(), out.clone()))
        return out
    return record


def test_wan_i2v_image_attention_is_the_hosts_own_and_never_edited(models, clip):
    """The CLIP-vision columns' keys and values (``k_img``, ``v_img``) reach the kernel bit-equal with
    and without the edit, for every image call of every block and step, while the edit moves the
    edited item; the source item's image attention is bit-equal too, and the maps hold text columns only."""
    model = models["wan21_i2v"].clone()
    calls: list = []
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = \
        recording_override(calls, wan_models.CLIP_VISION_TOKENS)
    positive, lat, edit = prompts(clip, TARGET, True)
    negative = encode(clip, "", True)
    plain_out = sample(model, positive, negative, lat)
    plain, calls[:] = list(calls), []
    patched, handle = control(model, edit)
    edited_out = sample(patched, positive, negative, lat)
    edited = list(calls)
    assert_edit_moves(edited_out, plain_out)
    blocks = len(model.model.diffusion_model.blocks)
    assert len(plain) >= STEPS * blocks and len(edited) == len(plain), (len(plain), len(edited))
    moved, same_rows = 0.0, 0
    for (q0, k0, v0, out0), (q1, k1, v1, out1) in zip(plain, edited):
        assert torch.equal(k1, k0) and torch.equal(v1, v0)  # the image keys and values, untouched
        for row in range(q0.shape[0]):  # a row whose queries are the plain run's (the source's) gets its output
            if torch.equal(q1[row], q0[row]):
                assert torch.equal(out1[row], out0[row])
                same_rows += 1
        moved = max(moved, float((out1 - out0).abs().max()))
    assert same_rows >= len(plain)  # the source's rows, in every call
    assert moved > 1e-4  # the target's queries moved (the edit ran), its image attention follows them unedited
    assert all(c < wan_models.WAN_COLUMNS for c in handle.store.columns)
    maps = handle.store.average(("output",))
    assert maps.shape[:4] == (2, FRAMES, 4, 4) and torch.isfinite(maps).all()
    print(f"wan 2.1 I2V: {len(edited)} image calls, k_img / v_img bit-equal with the edit; the target's image "
          f"attention output moved by up to {moved:.3g} (its queries)")


@pytest.mark.parametrize("run", ["wan21_i2v", "wan22_a14b_i2v"])
def test_wan_i2v_direct_inversion_reconstructs_exactly(models, clip, run):
    from harness.inversion_runs import rel_err

    model_name, clip_vision = RUNS[run]
    model = models[model_name]
    positive, negative = encode(clip, SOURCE, clip_vision), encode(clip, "", clip_vision)
    photo = torch.randn(1, 16, FRAMES, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(
            model, positive, negative, {"samples": photo}, "direct", "simple", STEPS, CFG, 0, 1e-5)
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    with torch.inference_mode():
        out = node("KSamplerAdvanced").sample(patched, "disable", 0, STEPS, CFG, "euler", "simple", positive, negative,
                                              noisy, 0, 10000, "disable")[0]["samples"]
    error = rel_err(out, photo)
    print(f"wan {run} direct inversion at cfg {CFG}: relative error {error:.2e}")
    assert out.shape == photo.shape and error < 1e-4


def test_wan_i2v_ddim_inversion_runs(models, clip):
    positive, negative = encode(clip, SOURCE, True), encode(clip, "", True)
    photo = torch.randn(1, 16, FRAMES, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        noisy, inversion = node("PromptEditInvertImage").invert(
            models["wan21_i2v"], positive, negative, {"samples": photo}, "ddim", "simple", STEPS, CFG, 0, 1e-5)
    assert noisy["samples"].shape == photo.shape and torch.isfinite(noisy["samples"]).all()
    assert inversion.method == "ddim"


def test_wan_i2v_local_blend_from_the_text_maps_runs(models, clip):
    """Local blend on 2.1 I2V: its mask comes from the text call's word maps (the image call records
    none); the run is finite and the source stays plain sampling."""
    positive, lat, edit = prompts(clip, TARGET, True)
    edit = node("P2PLocalBlend").blend(edit, clip, "cat", "dog", 0.3, 0.0)[0]
    negative = encode(clip, "", True)
    plain = sample(models["wan21_i2v"], positive, negative, lat)
    out = sample(control(models["wan21_i2v"], edit)[0], positive, negative, lat)
    assert out.shape == (2, 16, FRAMES, 8, 8) and torch.isfinite(out).all()
    changes = assert_edit_moves(out, plain)
    print(f"wan 2.1 I2V local blend: edited item moved by {changes[1]:.3g} relative")


def stock_node(name: str, **inputs) -> tuple:
    """Run one of ComfyUI's own nodes by its name, a new-style one (``execute``, 0.33.0's
    EmptyHunyuanLatentVideo, both hosts' WanImageToVideo) or an old-style one (its FUNCTION)."""
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS[name]
    if hasattr(cls, "define_schema"):
        return tuple(cls.execute(**inputs).args)
    return getattr(cls(), cls.FUNCTION)(**inputs)


def test_wan_i2v_through_the_stock_wan_image_to_video_node(models, clip):
    """The README's wiring with ComfyUI's own node: P2P Prompts (its latent an empty video latent of
    the node's size) -> WanImageToVideo (start image through a tiny Wan VAE, a CLIP-vision output) ->
    the sampler with P2P Prompts' latent; the edit moves the edited item, the source is plain sampling."""
    import comfy.clip_vision
    import nodes

    size, length = 64, 5  # a latent of 2 frames of 8 x 8
    empty = stock_node("EmptyHunyuanLatentVideo", width=size, height=size, length=length, batch_size=1)[0]
    positive, lat, edit = node("P2PPrompts").build(clip, empty, SOURCE, TARGET)
    clip_vision = comfy.clip_vision.Output()
    clip_vision["penultimate_hidden_states"] = torch.randn(1, wan_models.CLIP_VISION_TOKENS, wan_models.CLIP_VISION_DIM,
                                                           generator=torch.Generator().manual_seed(8))
    start = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        positive, negative, _ = stock_node(
            "WanImageToVideo", positive=positive, negative=nodes.CLIPTextEncode().encode(clip, "")[0],
            vae=wan_models.tiny_wan21_vae(), width=size, height=size, length=length, batch_size=1,
            start_image=start, clip_vision_output=clip_vision)
    assert positive[0][1]["concat_latent_image"].shape == (1, 16, FRAMES, 8, 8) and lat["samples"].shape[0] == 2
    model = models["wan21_i2v"]
    plain = sample(model, positive, negative, lat)
    changes = assert_edit_moves(sample(control(model, edit)[0], positive, negative, lat), plain)
    print(f"wan 2.1 I2V through WanImageToVideo: edited item moved by {changes[1]:.3g} relative")


def test_wan_i2v_calls_in_another_order_fail_loudly():
    """Image-to-video blocks call self, image, text; a host that called the text before the image
    (or made no image call) is refused at the first call whose keys do not fit, never edited."""
    from comfyui_prompt_edit.base.errors import PromptEditError
    from comfyui_prompt_edit.families.wan.install import WanAttentionCalls

    class Unedited:  # the controller's answer outside every window: the host's own attention
        def edited_self_attention(self, *args):
            return None

        edited_cross_attention = edited_self_attention

    def kernel(q, k, v, heads, **kwargs):
        return q

    grid, dim = (2, 4, 4), 8
    q = torch.zeros(1, 32, dim)
    calls = WanAttentionCalls(Unedited(), None, wan_models.WAN_COLUMNS, grid, wan_models.CLIP_VISION_TOKENS)
    for keys in (32, wan_models.CLIP_VISION_TOKENS, wan_models.WAN_COLUMNS, 32):  # block 0, then block 1's self
        assert calls(kernel, q, torch.zeros(1, keys, dim), torch.zeros(1, keys, dim), 2) is q
    calls = WanAttentionCalls(Unedited(), None, wan_models.WAN_COLUMNS, grid, wan_models.CLIP_VISION_TOKENS)
    calls(kernel, q, torch.zeros(1, 32, dim), torch.zeros(1, 32, dim), 2)
    text = torch.zeros(1, wan_models.WAN_COLUMNS, dim)
    with pytest.raises(PromptEditError, match="257 keys of block 0's image attention"):
        calls(kernel, q, text, text, 2)
