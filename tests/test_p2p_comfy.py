"""Prompt-to-Prompt through ComfyUI's real sampling stack, with tiny random-weight models."""

from __future__ import annotations

import pytest
import torch

from harness import comfyui

pytestmark = pytest.mark.comfy

STEPS, CFG, SEED = 6, 5.0, 42


def pack_nodes():
    import nodes

    m = nodes.NODE_CLASS_MAPPINGS
    return (m["PromptEditP2PPrompts"](), m["PromptEditP2PReweight"](), m["PromptEditP2PLocalBlend"](),
            m["PromptEditP2PAttentionControl"](), m["PromptEditP2PAttentionMaps"]())


def empty_latent(size=8):
    return {"samples": torch.zeros(1, 4, size, size)}


def assert_same(actual, expected, tol=1e-5):
    """Equal up to float rounding, relative to the tensors' magnitude (random models give large latents)."""
    scale = expected.abs().max().clamp_min(1.0)
    torch.testing.assert_close(actual / scale, expected / scale, atol=tol, rtol=tol)


def sample(model, positive, negative, latent, sampler="euler", steps=STEPS, cfg=CFG):
    import comfy.sample

    noise = comfy.sample.prepare_noise(latent["samples"], SEED, latent.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, sampler, "normal", positive, negative,
                                   latent["samples"], seed=SEED, disable_pbar=True)


def control(model, edit, kind="replace", cross=(0.0, 0.8), self_end=0.4, layers="coarse", path="fast", **kw):
    _, _, _, apply, _ = pack_nodes()
    return apply.apply(model, edit, kind, cross[0], cross[1], self_end, layers, attention_path=path, **kw)


def build(clip, source, edits, size=8):
    prompts, *_ = pack_nodes()
    return prompts.build(clip, empty_latent(size), source, edits)


MODELS = [("tiny_sd15", "tiny_sd15_clip"), ("tiny_sd2v", "tiny_sd2_clip"), ("tiny_sdxl", "tiny_sdxl_clip")]


@pytest.fixture(params=MODELS, ids=["sd15", "sd2v", "sdxl"])
def model_and_clip(request):
    return request.getfixturevalue(request.param[0]), request.getfixturevalue(request.param[1])


def test_identity_edit_reproduces_the_source_and_the_source_equals_plain_sampling(model_and_clip):
    model, clip = model_and_clip
    prompt = "a photo of a cat sitting on a mat"
    positive, latent, edit = build(clip, prompt, f"{prompt}\n{prompt}")
    negative = comfyui.encode(clip, "")
    patched, _ = control(model, edit, cross=(0.0, 1.0), self_end=1.0, layers="all")
    edited = sample(patched, positive, negative, latent)
    assert_same(edited[1], edited[0])
    assert_same(edited[2], edited[0])
    plain = sample(model, comfyui.encode(clip, prompt), negative, {"samples": latent["samples"][:1], "batch_index": [0]})
    assert_same(edited[0], plain[0])


def test_edits_change_only_the_edited_items(model_and_clip):
    model, clip = model_and_clip
    positive, latent, edit = build(clip, "a photo of a cat on a mat", "a photo of a dog on a mat")
    negative = comfyui.encode(clip, "")
    plain = sample(model, positive, negative, latent)
    patched, _ = control(model, edit)
    edited = sample(patched, positive, negative, latent)
    assert_same(edited[0], plain[0])
    assert (edited[1] - plain[1]).abs().max() > 1e-3


def test_all_ones_reweight_equals_no_reweight(tiny_sd15, tiny_sd15_clip):
    _, reweight, *_ = pack_nodes()
    positive, latent, edit = build(tiny_sd15_clip, "a cat riding a bicycle", "a dog riding a bicycle")
    negative = comfyui.encode(tiny_sd15_clip, "")
    plain_edit = sample(control(tiny_sd15, edit)[0], positive, negative, latent)
    ones = reweight.reweight(edit, tiny_sd15_clip, "dog, bicycle", 1.0)[0]
    torch.testing.assert_close(sample(control(tiny_sd15, ones)[0], positive, negative, latent), plain_edit)
    strong = reweight.reweight(edit, tiny_sd15_clip, "dog", -2.0)[0]
    assert (sample(control(tiny_sd15, strong)[0], positive, negative, latent)[1] - plain_edit[1]).abs().max() > 1e-3


@pytest.mark.parametrize("kind,edits", [
    ("replace", "a photo of a teddy bear riding a bicycle"),
    ("refine", "a photo of a fluffy cat riding a red bicycle at night"),
    ("reweight", "a photo of a cat riding a bicycle"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fast_path_equals_reference_path_through_the_sampler(tiny_sd15, tiny_sd15_clip, kind, edits, dtype):
    reweight_node = pack_nodes()[1]
    clip = tiny_sd15_clip
    positive, latent, edit = build(clip, "a photo of a cat riding a bicycle", edits)
    edit = reweight_node.reweight(edit, clip, "bicycle", 2.5)[0]
    negative = comfyui.encode(clip, "")
    if dtype == torch.float16:
        tiny_sd15.model.to(dtype)
        tiny_sd15.model.manual_cast_dtype = None
        tiny_sd15.model.diffusion_model.dtype = dtype
    results = [sample(control(tiny_sd15, edit, kind=kind, path=p, self_end=0.5, layers="all")[0], positive, negative, latent)
               for p in ("fast", "reference")]
    assert_same(results[0], results[1], 1e-4 if dtype == torch.float32 else 2e-2)


def test_unconditional_chunk_is_never_modified(tiny_sd15, tiny_sd15_clip):
    positive, latent, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat\na fox on a mat")
    negative = comfyui.encode(tiny_sd15_clip, "")
    records = {}

    def recorder(tag):
        def wrapper(apply_model, args):
            out = apply_model(args["input"], args["timestep"], **args["c"])
            b = out.shape[0] // len(args["cond_or_uncond"])
            for i, chunk in enumerate(args["cond_or_uncond"]):
                records.setdefault((tag, chunk), []).append(out[i * b:(i + 1) * b].clone())
            return out
        return wrapper

    plain = tiny_sd15.clone()
    plain.set_model_unet_function_wrapper(recorder("plain"))
    patched, _ = control(tiny_sd15, edit)
    patched.set_model_unet_function_wrapper(recorder("p2p"))
    # sample the patched run from the plain run's inputs: the uncond rows see identical inputs at
    # step 0, and every step's uncond output must be the plain UNet's output for those inputs
    sample(patched, positive, negative, latent)
    sample(plain, positive, negative, latent)
    torch.testing.assert_close(records[("p2p", 1)][0], records[("plain", 1)][0])
    assert not torch.allclose(records[("p2p", 0)][0], records[("plain", 0)][0])


def test_cond_and_uncond_in_separate_unet_calls_give_the_same_result(tiny_sd15, tiny_sd15_clip):
    import comfy.patcher_extension as pe

    positive, latent, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    negative = comfyui.encode(tiny_sd15_clip, "")
    patched, _ = control(tiny_sd15, edit, self_end=0.5)
    together = sample(patched, positive, negative, latent)
    calls = []

    def split(executor, model, conds, x_in, timestep, model_options):
        outs = [executor(model, [c if i == j else None for j in range(len(conds))], x_in, timestep, model_options)[i]
                if c is not None else None for i, c in enumerate(conds)]
        calls.append(len(conds))
        return outs

    split_model = patched.clone()
    split_model.add_wrapper_with_key(pe.WrappersMP.CALC_COND_BATCH, "test_split", split)
    apart = sample(split_model, positive, negative, latent)
    assert calls, "the split wrapper did not run"
    assert_same(apart, together)


def test_no_state_leaks_between_queued_runs(tiny_sd15, tiny_sd15_clip):
    _, _, blend, _, _ = pack_nodes()
    positive, latent, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    edit = blend.blend(edit, tiny_sd15_clip, "cat", "dog", 0.3, 0.2)[0]
    negative = comfyui.encode(tiny_sd15_clip, "")
    patched, controller = control(tiny_sd15, edit)
    first = sample(patched, positive, negative, latent)
    layers_first = dict(controller.store.layer_counts)
    second = sample(patched, positive, negative, latent)
    torch.testing.assert_close(second, first)
    assert controller.store.layer_counts == layers_first


def test_stock_samplers_agree(tiny_sd15, tiny_sd15_clip, comfy_nodes):
    m = comfy_nodes.NODE_CLASS_MAPPINGS
    positive, latent, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    negative = comfyui.encode(tiny_sd15_clip, "")
    patched, _ = control(tiny_sd15, edit)
    with torch.inference_mode():
        ks = m["KSampler"]().sample(patched, SEED, STEPS, CFG, "euler", "normal", positive, negative, latent)[0]
        ksa = m["KSamplerAdvanced"]().sample(patched, "enable", SEED, STEPS, CFG, "euler", "normal", positive, negative,
                                             latent, 0, 10000, "disable")[0]
        guider = m["CFGGuider"]().execute(patched, positive, negative, CFG)[0] if hasattr(m["CFGGuider"], "execute") else m["CFGGuider"]().get_guider(patched, positive, negative, CFG)[0]
        noise = m["RandomNoise"]().execute(SEED)[0] if hasattr(m["RandomNoise"], "execute") else m["RandomNoise"]().get_noise(SEED)[0]
        sampler = comfyui.run_node(m["KSamplerSelect"], "euler")
        sigmas = comfyui.run_node(m["BasicScheduler"], patched, "normal", STEPS, 1.0)
        sca = comfyui.run_node(m["SamplerCustomAdvanced"], noise, guider, sampler, sigmas, latent)
    torch.testing.assert_close(ksa["samples"], ks["samples"])
    assert_same(sca["samples"], ks["samples"])


def test_local_blend_keeps_the_source_outside_the_edited_region(tiny_sd15, tiny_sd15_clip):
    from comfyui_prompt_edit.attention.local_blend import blend_mask

    _, _, blend, _, _ = pack_nodes()
    positive, latent, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat", size=16)
    negative = comfyui.encode(tiny_sd15_clip, "")

    def final_mask(controller, threshold):
        store = controller.store
        maps = store.running.unflatten(1, store.spatial)
        return blend_mask(maps, controller.plan.blend_selectors, (16, 16), threshold)[0, 0].bool()

    # random weights give flat maps: take a threshold that splits this model's mask in two
    probe = control(tiny_sd15, blend.blend(edit, tiny_sd15_clip, "cat", "dog", 0.5, 0.0)[0])
    sample(probe[0], positive, negative, latent)
    store = probe[1].store
    maps = (store.running.unflatten(1, store.spatial) * probe[1].plan.blend_selectors[:, None, None, :]).sum(-1)
    threshold = float((maps / maps.amax((1, 2), keepdim=True)).median())

    patched, controller = control(tiny_sd15, blend.blend(edit, tiny_sd15_clip, "cat", "dog", threshold, 0.0)[0])
    out = sample(patched, positive, negative, latent)
    mask = final_mask(controller, threshold)
    assert 0 < mask.sum() < mask.numel()
    assert_same(out[1][:, ~mask], out[0][:, ~mask])  # the last step lands exactly on the blend
    assert (out[1][:, mask] - out[0][:, mask]).abs().max() > 1e-3 * out.abs().max()


def test_long_prompts_and_edits_past_the_first_chunk(tiny_sd15, tiny_sd15_clip):
    filler = " ".join(["very"] * 80)
    source = f"a cat on a {filler} mat"
    positive, latent, edit = build(tiny_sd15_clip, source, f"{source.replace('mat', 'rug')}")
    assert positive[0][0].shape[1] == 154
    assert edit.targets[0].find(("rug",))[0][0] >= 77  # the swapped word lies in the second chunk
    negative = comfyui.encode(tiny_sd15_clip, "")
    out = sample(control(tiny_sd15, edit)[0], positive, negative, latent)
    assert torch.isfinite(out).all()
    identical, latent2, same = build(tiny_sd15_clip, source, source)
    out = sample(control(tiny_sd15, same, cross=(0, 1), self_end=1.0)[0], identical, negative, latent2)
    assert_same(out[1], out[0])


def test_attention_maps_image(tiny_sd15, tiny_sd15_clip):
    *_, maps_node = pack_nodes()
    positive, latent, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    patched, controller = control(tiny_sd15, edit)
    out = sample(patched, positive, comfyui.encode(tiny_sd15_clip, ""), latent)
    image = maps_node.render(controller, {"samples": out}, 1, "input+output", 0.0, 1.0, False, 64, 8)[0]
    assert image.shape == (1, 64 + 20, 5 * 64, 3)  # 5 words: a dog on a mat
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    with_special = maps_node.render(controller, {"samples": out}, 0, "input", 0.0, 0.5, True, 32, 4)[0]
    assert with_special.shape == (1, 2 * (32 + 20), 4 * 32, 3)  # 7 tiles in rows of 4


# -- bad input: clear messages, raised before sampling ---------------------------------------


def test_word_not_in_prompt(tiny_sd15_clip):
    _, reweight, blend, _, _ = pack_nodes()
    _, _, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    with pytest.raises(ValueError, match="'zebra' is not in any edited prompt"):
        reweight.reweight(edit, tiny_sd15_clip, "zebra", 2.0)
    with pytest.raises(ValueError, match="source word 'dog' is not in the source prompt"):
        blend.blend(edit, tiny_sd15_clip, "dog", "dog", 0.3, 0.2)


def test_swapped_words_with_other_token_counts_are_mapped_word_by_word(tiny_sd15_clip):
    """With the real CLIP tokenizer "iguana" is two tokens; "happy apple" → "old iguana" pairs happy
    with old and apple with both halves of iguana (tests/test_seq_aligner.py has the full mapper)."""
    from comfyui_prompt_edit.attention.seq_aligner import replacement_mapper

    _, _, edit = build(tiny_sd15_clip, "a photo of a happy apple on a table", "a photo of a old iguana on a table")
    source, target = edit.source, edit.targets[0]
    (happy,), (apple,) = source.find(("happy",))[0], source.find(("apple",))[0]
    (old,), iguana = target.find(("old",))[0], list(target.find(("iguana",))[0])
    assert len(iguana) == 2
    m = replacement_mapper(source, target)
    assert m[happy, old] == 1.0 and m[happy, iguana].sum() == 0.0 and m[apple, old] == 0.0
    torch.testing.assert_close(m[apple, iguana], torch.full((2,), 0.5))


def test_bad_settings_name_the_input(tiny_sd15, tiny_sd15_clip):
    _, _, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    with pytest.raises(ValueError, match=r"cross_attention_start/end: step window 0\.6-0\.2"):
        control(tiny_sd15, edit, cross=(0.6, 0.2))
    with pytest.raises(ValueError, match="self_attention_end: step window"):
        control(tiny_sd15, edit, self_end=1.5)
    with pytest.raises(ValueError, match="edit kind 'swap' is not one of"):
        control(tiny_sd15, edit, kind="swap")
    with pytest.raises(ValueError, match="self_attention_layers 'fine' is not one of"):
        control(tiny_sd15, edit, layers="fine")
    with pytest.raises(ValueError, match="attention_path 'slow' is not one of"):
        control(tiny_sd15, edit, path="slow")


def test_user_errors_share_the_packs_error_base():
    from comfyui_prompt_edit.families import UnsupportedModelError
    from comfyui_prompt_edit.attention.errors import P2PInputError
    from comfyui_prompt_edit.attention.seq_aligner import AlignmentError
    from comfyui_prompt_edit.base.errors import PromptEditError
    from comfyui_prompt_edit.patching.comfy_model import PatchConflictError

    for error in (P2PInputError, AlignmentError, UnsupportedModelError, PatchConflictError):
        assert issubclass(error, PromptEditError)


def test_replace_with_added_words_points_to_refine(tiny_sd15, tiny_sd15_clip):
    _, _, edit = build(tiny_sd15_clip, "a cat on a mat", "a big cat on a mat")
    with pytest.raises(ValueError, match="refine"):
        control(tiny_sd15, edit)
    _, _, unrelated = build(tiny_sd15_clip, "a cat on a mat", "two dogs in snow")
    with pytest.raises(ValueError, match="shares no word"):
        control(tiny_sd15, unrelated)


def test_latent_batch_mismatch_fails_before_the_unet_runs(tiny_sd15, tiny_sd15_clip):
    positive, _, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    patched, _ = control(tiny_sd15, edit)
    calls = []
    patched.set_model_unet_function_wrapper(lambda f, a: calls.append(1) or f(a["input"], a["timestep"], **a["c"]))
    with pytest.raises(ValueError, match="LATENT output of 'P2P Prompts'"):
        sample(patched, positive, comfyui.encode(tiny_sd15_clip, ""), empty_latent())
    assert not calls


def test_conditioning_shorter_than_the_prompts_fails_before_sampling(tiny_sd15, tiny_sd15_clip):
    long_source = "a cat on a " + " ".join(["very"] * 80) + " mat"
    _, latent, edit = build(tiny_sd15_clip, long_source, long_source.replace("cat", "dog"))
    short_positive, _, _ = build(tiny_sd15_clip, "a cat", "a dog")
    patched, _ = control(tiny_sd15, edit)
    with pytest.raises(ValueError, match="past the conditioning's last chunk"):
        sample(patched, short_positive, comfyui.encode(tiny_sd15_clip, ""), latent)


def test_a_clip_edit_on_an_mmdit_model_is_refused_naming_the_input(tiny_sd15_clip):
    """Prompts encoded by a UNet's CLIP have no T5 part for a Flux / SD3 model to read."""
    from harness import mmdit_models

    _, _, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    with pytest.raises(ValueError, match="p2p_edit: its prompts were encoded by a CLIP without T5"):
        control(mmdit_models.tiny_flux_model(), edit)


def test_word_windows_override_one_word(tiny_sd15, tiny_sd15_clip):
    positive, latent, edit = build(tiny_sd15_clip, "a cat on a mat", "a dog on a mat")
    negative = comfyui.encode(tiny_sd15_clip, "")
    patched, controller = control(tiny_sd15, edit, word_windows="dog=0.2-0.5", clip=tiny_sd15_clip)
    dog = edit.targets[0].find(("dog",))[0][0]
    mat = edit.targets[0].find(("mat",))[0][0]
    windows = controller.plan.column_windows[0]
    assert (windows[dog].start, windows[dog].end) == (0.2, 0.5) and (windows[mat].start, windows[mat].end) == (0.0, 0.8)
    default = sample(control(tiny_sd15, edit)[0], positive, negative, latent)
    assert (sample(patched, positive, negative, latent)[1] - default[1]).abs().max() > 1e-4 * default.abs().max()
    with pytest.raises(ValueError, match="word_windows: connect the CLIP"):
        control(tiny_sd15, edit, word_windows="dog=0.4")
