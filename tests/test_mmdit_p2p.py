"""Prompt-to-Prompt on Flux and SD3 (the qk edit) through ComfyUI's stock sampling, with tiny
random-weight models (tests/harness/mmdit_models.py)."""

from __future__ import annotations

import types

import pytest
import torch

from harness import comfyui, mmdit_models, workflows
from harness.attention_capture import Capture
from harness.edit_checks import MIN_EDIT_CHANGE, assert_edit_moves, assert_same, relative_change

pytestmark = pytest.mark.comfy

STEPS, SEED = 10, 7
LATENT = 16  # a 16×16 latent: 8×8 = 64 image tokens
FAMILIES = ["flux-dev", "flux-schnell", "sd3", "sd3.5"]


def model_of(family: str):
    if family.startswith("flux"):
        return mmdit_models.tiny_flux_model(schnell=family == "flux-schnell")
    return mmdit_models.tiny_sd3_model(x_block_self_attn_layers=(0,) if family == "sd3.5" else ())


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[f"PromptEdit{name}"]()


def t5_edit(targets: int = 1):
    from comfyui_prompt_edit.attention.edit_spec import T5_ENCODER, P2PEdit
    from comfyui_prompt_edit.attention.tokens import PromptTokens

    return P2PEdit(PromptTokens.text_only("source"), tuple(PromptTokens.text_only(f"edit {i}") for i in range(targets)),
                   encoder=T5_ENCODER)


def batch_conditioning(rows: list[int], tokens: int = 8) -> list:
    """A P2P-style positive: one random prompt per seed in ``rows`` (equal seeds = equal prompts)."""
    parts = [mmdit_models.random_conditioning(tokens=tokens, seed=s)[0] for s in rows]
    return [[torch.cat([p[0] for p in parts]), {"pooled_output": torch.cat([p[1]["pooled_output"] for p in parts])}]]


def latent(batch: int) -> dict:
    return {"samples": torch.zeros(batch, mmdit_models.MMDIT_LATENT_CHANNELS, LATENT, LATENT), "batch_index": [0] * batch}


def sample(model, positive, latent_image, cfg=1.0, negative=None, steps=STEPS):
    import comfy.sample

    if negative is None:
        negative = mmdit_models.random_conditioning(seed=99)
    samples = latent_image["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED, latent_image.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, samples,
                                   seed=SEED, disable_pbar=True)


def control(model, edit, qk_end=0.2, kind="replace", **kw):
    return node("P2PAttentionControl").apply(model, edit, kind, 0.0, 0.8, 0.4, "coarse", qk_end=qk_end, **kw)




def set_override(model, override) -> None:
    """Put an attention override ``override(func, *args, **kwargs)`` on the model as another node would."""
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override


# -- identity, windows, the source ----------------------------------------------------------------


@pytest.mark.parametrize("cfg", [1.0, 2.5])
@pytest.mark.parametrize("family", FAMILIES)
def test_equal_prompts_give_the_source_and_the_patched_source_is_plain_sampling(family, cfg):
    model = model_of(family)
    positive = batch_conditioning([1, 1, 1])
    patched, _ = control(model, t5_edit(targets=2), qk_end=1.0)
    edited = sample(patched, positive, latent(3), cfg)
    # to float32 roundoff (edit_checks.ROUNDOFF_TOL): a batch of 3 and a batch of 1 of one prompt
    # differ by up to 3.5e-6 without any edit (cfg 2.5), and so do the rows of one batch
    assert_same(edited[1], edited[0])
    assert_same(edited[2], edited[0])
    plain = sample(model, batch_conditioning([1]), latent(1), cfg)
    assert_same(edited[0], plain[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_an_empty_window_is_no_patch_and_the_edit_moves_only_the_edited_item(family):
    model = model_of(family)
    positive = batch_conditioning([1, 2])
    plain = sample(model, positive, latent(2), cfg=2.0)
    empty, _ = control(model, t5_edit(), qk_end=0.0)
    assert torch.equal(sample(empty, positive, latent(2), cfg=2.0), plain)
    edited = sample(control(model, t5_edit())[0], positive, latent(2), cfg=2.0)
    assert torch.equal(edited[0], plain[0])
    # the first 20 % of the steps with the source's image queries and keys move the edited item by
    # 5e-2 (sd3.5) … 5e-1 (flux-schnell) relative: well over the roundoff
    assert_edit_moves(edited, plain)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_edit_with_the_text_image_boundary_off_by_one_token_is_told_from_the_right_edit(family):
    """The tests can tell right from wrong: the qk edit with the text length one token short (the
    edit row's last text token becomes the source's) or one token long (its first image token
    stays its own) samples an edited item that differs from the right edit's by 2e-2 … 2.5e-1
    (relative), far over the roundoff, while the source stays plain sampling."""
    from comfyui_prompt_edit.attention.mmdit_edit import QKEdit, QKOverride, QKSettings
    from comfyui_prompt_edit.attention.step_window import Window
    from comfyui_prompt_edit.families.joint.install import install_mmdit_edit

    class WrongBoundary(QKEdit):
        def __init__(self, shift: int):
            super().__init__(t5_edit(), QKSettings(Window(0.0, 0.2)))
            self.shift = shift

        def override(self, position, text_length, joint_length, previous, **layout):  # image_length, PromptColumns
            if not self.settings.window.active(*position):
                return None
            return QKOverride(self, text_length + self.shift, joint_length, previous)

    model = model_of(family)
    positive = batch_conditioning([1, 2])
    right = sample(control(model, t5_edit(), qk_end=0.2)[0], positive, latent(2), cfg=2.0)
    assert torch.equal(sample(install_mmdit_edit(model, WrongBoundary(0))[0], positive, latent(2), cfg=2.0), right)
    for shift in (-1, 1):
        wrong = sample(install_mmdit_edit(model, WrongBoundary(shift))[0], positive, latent(2), cfg=2.0)
        assert_edit_moves(wrong, right)


@pytest.mark.parametrize("family", FAMILIES)
def test_inside_the_window_the_edit_has_the_source_image_queries_and_keys(family):
    model = model_of(family).clone()
    capture = Capture()
    set_override(model, capture)  # applied before P2P: it must still run, on the edited q, k
    positive, text = batch_conditioning([1, 2]), 8
    sample(control(model, t5_edit(), qk_end=0.2)[0], positive, latent(2), cfg=1.0)
    image_tokens = (LATENT // 2) ** 2
    joint = [c for c in capture.calls if c.length == text + image_tokens]
    assert {c[0] for c in joint} == set(range(STEPS))  # every block of every step went through the override
    blocks = len(joint) // STEPS
    assert blocks == {"flux-dev": 3, "flux-schnell": 3}.get(family, 2)
    for step, _, axis, q, k in joint:
        for x in (q, k):
            image = x.narrow(axis, text, image_tokens)
            if step < 2:  # 0.2 of 10 steps
                assert torch.equal(image[1], image[0])
                assert not torch.equal(x.narrow(axis, 0, text)[1], x.narrow(axis, 0, text)[0])  # own text kept
            else:
                assert not torch.equal(image[1], image[0])


@pytest.mark.parametrize("family", ["flux-dev", "sd3"])
def test_with_cfg_only_the_conditional_chunk_is_edited_in_the_order_the_host_batches(family):
    model = model_of(family).clone()
    capture = Capture()
    set_override(model, capture)
    text, image_tokens = 8, (LATENT // 2) ** 2
    sample(control(model, t5_edit(), qk_end=0.3)[0], batch_conditioning([1, 2]), latent(2), cfg=3.0)
    orders = {tuple(c[1]) for c in capture.calls}
    assert all(len(order) == 2 for order in orders)  # cond and uncond in one call
    if family == "sd3":
        assert orders == {(1, 0)}
    checked = 0
    for step, order, axis, q, _ in capture.calls:
        if not 1 <= step < 3 or q.shape[axis] != text + image_tokens:
            continue
        for chunk, kind in enumerate(order):
            image = q[2 * chunk:2 * chunk + 2].narrow(axis, text, image_tokens)
            assert torch.equal(image[1], image[0]) == (kind == 0)
            checked += 1
    assert checked > 0


def test_sd35_image_only_attention_is_left_alone():
    model = model_of("sd3.5").clone()
    capture = Capture()
    set_override(model, capture)
    text, image_tokens = 8, (LATENT // 2) ** 2
    sample(control(model, t5_edit(), qk_end=0.5)[0], batch_conditioning([1, 2]), latent(2))
    image_only = [c for c in capture.calls if c.length == image_tokens]
    joint = [c for c in capture.calls if c.length == text + image_tokens]
    assert {c[0] for c in image_only} == set(range(STEPS))  # block 0's attn2, every step
    # no image token of the edit's attn2 queries is the source's (the prototype's bug replaced them from T on)
    assert all(bool((q[1] != q[0]).any(-1).all()) for step, _, _, q, _ in image_only if 1 <= step < 5)
    assert all(torch.equal(q[1, text:], q[0, text:]) for step, _, _, q, _ in joint if step < 5)


# -- composition -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["flux-dev", "sd3"])
def test_a_dit_patch_already_on_the_model_keeps_running_inside_the_edit(family):
    base = model_of(family)
    seen = []

    def damp(args, extra):  # another node's block patch: scales the block's image output
        seen.append("optimized_attention_override" in args["transformer_options"])
        out = extra["original_block"](args)
        return {**out, "img": out["img"] * 0.9}

    with_patch = base.clone()
    with_patch.set_model_patch_replace(damp, "dit", "double_block", 0)
    positive = batch_conditioning([1, 2])
    reference = sample(with_patch, positive, latent(2))
    seen.clear()
    edited = sample(control(with_patch, t5_edit(), qk_end=0.2)[0], positive, latent(2))
    assert len(seen) == STEPS and seen[:2] == [True, True] and not any(seen[2:])
    assert torch.equal(edited[0], reference[0])  # the source: exactly the patched model's
    assert_edit_moves(edited, reference)


def set_attention_kernel(model, kernel) -> None:
    """Replace the model's attention function as a kernel node does: through
    ``set_model_optimized_attention`` where the host has it (0.33.0), else by writing the override
    that setter writes, one that ignores the host's function (what such nodes do on 0.3.64)."""
    if hasattr(model, "set_model_optimized_attention"):
        model.set_model_optimized_attention(kernel)
    else:
        set_override(model, lambda _host_function, *args, **kwargs: kernel(*args, **kwargs))


def test_an_attention_kernel_set_on_the_model_runs_the_edited_attention():
    from comfy.ldm.modules.attention import attention_pytorch

    calls = []

    def kernel(q, k, v, heads, **kwargs):  # another node's attention function (e.g. a faster kernel)
        calls.append(q.shape)
        return attention_pytorch(q, k, v, heads, **kwargs)

    model = mmdit_models.tiny_flux_model()
    with_kernel = model.clone()
    set_attention_kernel(with_kernel, kernel)
    positive = batch_conditioning([1, 1])
    edited = sample(control(with_kernel, t5_edit(), qk_end=1.0)[0], positive, latent(2))
    assert len(calls) == 3 * STEPS
    assert_same(edited[1], edited[0])
    assert_same(edited[0], sample(model, batch_conditioning([1]), latent(1))[0])


def test_a_block_patch_applied_after_the_edit_or_a_second_edit_is_refused():
    from comfyui_prompt_edit.patching.comfy_model import PatchConflictError

    patched, _ = control(mmdit_models.tiny_flux_model(), t5_edit())
    with pytest.raises(PatchConflictError, match="already went through P2P Attention Control"):
        control(patched, t5_edit())
    later = patched.clone()
    later.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", "single_block", 1)
    with pytest.raises(PatchConflictError, match=r"replaced the transformer block \('single_block', 1\)"):
        sample(later, batch_conditioning([1, 2]), latent(2))


# -- refusals --------------------------------------------------------------------------------------


def test_what_the_qk_mechanism_cannot_do_is_refused_clearly(tiny_sd15):
    from comfyui_prompt_edit.attention.errors import P2PInputError

    model = mmdit_models.tiny_sd3_model()
    with pytest.raises(P2PInputError, match="edit: 'reweight' is not available with mmdit_mechanism 'qk'"):
        control(model, t5_edit(), kind="reweight")
    with pytest.raises(P2PInputError, match="word_windows: the qk mechanism edits no single words"):
        control(model, t5_edit(), word_windows="dog=0.5")
    with pytest.raises(P2PInputError, match="mmdit_blocks: this model has no single blocks"):
        control(model, t5_edit(), mmdit_blocks="single")
    _, handle = control(model, t5_edit())
    with pytest.raises(P2PInputError, match="attention: no maps were recorded"):
        node("P2PAttentionMaps").render(handle, latent(2), 0, "input+output", 0.0, 1.0, False, 64, 4)
    with pytest.raises(P2PInputError, match="SD1.x / SD2.x / SDXL, a UNet that reads a CLIP without T5"):
        control(tiny_sd15, t5_edit())
    with pytest.raises(P2PInputError, match="sampler's latent has 1 item"):
        sample(control(model, t5_edit())[0], batch_conditioning([1, 2]), latent(1))


def test_other_transformers_keep_a_clear_refusal():
    import comfy.model_base
    from comfyui_prompt_edit.families import UnsupportedModelError, find_family

    for name in ("HiDream", "LongCatImage"):  # refused, or a Flux subclass without a row: no family
        cls = getattr(comfy.model_base, name, None)
        if cls is not None:
            assert find_family(types.SimpleNamespace(model=object.__new__(cls))) is None, name
    other = types.SimpleNamespace(model=type("OtherDiT", (), {"diffusion_model": types.SimpleNamespace()})())
    with pytest.raises(UnsupportedModelError, match="this model is OtherDiT, which the pack cannot edit; it edits .*Flux.1"):
        control(other, t5_edit())
    hidream = types.SimpleNamespace(model=object.__new__(comfy.model_base.HiDream))
    with pytest.raises(UnsupportedModelError, match="this model is HiDream .*image before the text"):
        control(hidream, t5_edit())


# -- P2P Prompts with Flux's and SD3's text encoders -----------------------------------------------


@pytest.fixture(scope="module")
def flux_clip():
    comfyui.ensure_comfyui()
    return mmdit_models.tiny_flux_clip()


@pytest.fixture(scope="module")
def sd3_clip():
    comfyui.ensure_comfyui()
    return mmdit_models.tiny_sd3_clip()


LONG = ", ".join(["a photo of a (cat:1.2) on a red mat"] * 40)  # > 256 T5 tokens, 4 CLIP chunks


@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_p2p_prompts_encode_every_prompt_to_one_context_length(which, flux_clip, sd3_clip):
    clip = (flux_clip if which == "flux" else sd3_clip).clone()
    source = "a photo of a cat on a mat"
    positive, out_latent, edit = node("P2PPrompts").build(clip, latent(1), source, f"a photo of a dog on a mat\n{LONG}")
    cond, extras = positive[0]
    from comfyui_prompt_edit.attention.edit_spec import T5_ENCODER

    assert edit.encoder == T5_ENCODER and edit.batch_size == 3 and edit.source.text == source
    assert edit.source.num_columns == edit.targets[1].num_columns == cond.shape[1]  # words at context columns
    assert cond.shape[0] == 3 and extras["pooled_output"].shape[0] == 3 and out_latent["samples"].shape[0] == 3
    long_alone = comfyui.encode(clip, LONG)[0][0]
    assert cond.shape[1] == long_alone.shape[1] > (256 if which == "flux" else 77 + 77)
    short, _, _ = node("P2PPrompts").build(clip, latent(1), source, "a photo of a dog on a mat")
    alone = comfyui.encode(clip, source)
    # prompts that need no padding: exactly CLIPTextEncode's (one encoder pass: float32 roundoff only)
    assert_same(short[0][0][0], alone[0][0][0], tol=1e-6)
    assert_same(short[0][1]["pooled_output"][0], alone[0][1]["pooled_output"][0], tol=1e-6)


def test_p2p_reweight_and_local_blend_take_t5_words(flux_clip):
    from comfyui_prompt_edit.attention.errors import P2PInputError

    clip = flux_clip.clone()
    _, _, edit = node("P2PPrompts").build(clip, latent(1), "a cat", "a dog")
    (reweighted,) = node("P2PReweight").reweight(edit, clip, "dog", 2.0)
    assert [(r.words, r.weight) for r in reweighted.reweights] == [(("dog",), 2.0)]
    with pytest.raises(P2PInputError, match="P2P Reweight, which the qk mechanism does not weight"):
        control(mmdit_models.tiny_flux_model(), reweighted)
    (blended,) = node("P2PLocalBlend").blend(edit, clip, "cat", "dog", 0.3, 0.2)
    assert blended.local_blend.source_words == (("cat",),)
    with pytest.raises(P2PInputError, match="local blend source word 'Cat' is not in the source prompt"):
        node("P2PLocalBlend").blend(edit, clip, "Cat", "dog", 0.3, 0.2)  # T5 words keep their case


@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_the_whole_edit_with_the_models_text_encoder(which, flux_clip, sd3_clip):
    if which == "flux":
        clip, model = flux_clip.clone(), mmdit_models.tiny_flux_model()
    else:
        clip = sd3_clip.clone()
        model = mmdit_models.tiny_sd3_model(context_dim=mmdit_models.SD3_CONTEXT_DIM,
                                            pooled_dim=mmdit_models.SD3_TINY_POOLED_DIM)
    prompt = "a photo of a cat riding a bicycle"
    negative = comfyui.encode(clip, "")
    positive, batch, edit = node("P2PPrompts").build(clip, latent(1), prompt, f"{prompt}\na photo of a dog riding a bicycle")
    edited = sample(control(model, edit, qk_end=0.3)[0], positive, batch, cfg=2.0, negative=negative)
    plain = sample(model, comfyui.encode(clip, prompt), latent(1), cfg=2.0, negative=negative)
    assert_same(edited[0], plain[0])
    assert_same(edited[1], plain[0])
    assert relative_change(edited[2], plain[0]) > MIN_EDIT_CHANGE


# -- through ComfyUI's executor and its KSampler node ---------------------------------------------


class TinyFluxWithClip:
    """Test-only loader node: the tiny Flux and its tiny text encoder."""

    CATEGORY = "testing"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        return mmdit_models.tiny_flux_model(), mmdit_models.tiny_flux_clip()


def executor_prompt(edits: str, kind: str = "replace") -> dict:
    source = "a photo of a cat riding a bicycle"
    return {
        "1": {"class_type": "TestTinyFluxWithClip", "inputs": {}},
        "2": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 8 * LATENT, "height": 8 * LATENT, "batch_size": 1}},
        "3": {"class_type": "PromptEditP2PPrompts", "inputs": {"clip": ["1", 1], "latent": ["2", 0], "source": source, "edits": edits}},
        "4": {"class_type": "PromptEditP2PAttentionControl", "inputs": {
            "model": ["1", 0], "p2p_edit": ["3", 2], "edit": kind, "cross_attention_start": 0.0, "cross_attention_end": 0.8,
            "self_attention_end": 0.4, "self_attention_layers": "coarse", "qk_end": 0.25}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["3", 0], "negative": ["5", 0], "latent_image": ["3", 1], "seed": SEED,
            "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "mmdit_p2p"}},
    }


@pytest.fixture
def tiny_flux_node(comfy_nodes):
    comfy_nodes.NODE_CLASS_MAPPINGS["TestTinyFluxWithClip"] = TinyFluxWithClip
    try:
        yield
    finally:
        del comfy_nodes.NODE_CLASS_MAPPINGS["TestTinyFluxWithClip"]


def test_the_executor_runs_the_edit_through_the_ksampler_node(tiny_flux_node):
    import folder_paths
    from safetensors.torch import load_file

    outputs = workflows.run_api_prompt(executor_prompt("a photo of a cat riding a bicycle\na photo of a dog riding a bicycle"),
                                       fresh_executor=True)
    entry = outputs["7"]["latents"][0]
    path = f"{folder_paths.get_output_directory()}/{entry['subfolder']}/{entry['filename']}"
    samples = load_file(path)["latent_tensor"]
    assert samples.shape[0] == 3
    assert torch.equal(samples[1], samples[0]) and not torch.equal(samples[2], samples[0])
    with pytest.raises(AssertionError, match="edit: 'refine' is not available with mmdit_mechanism 'qk'"):
        workflows.run_api_prompt(executor_prompt("a photo of a dog riding a bicycle", kind="refine"), fresh_executor=True)
