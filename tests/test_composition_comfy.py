"""The pack's patches beside the model patches people already use, through the real sampler.

Every test asserts the composed result. Two identities carry most of them:
- P2P never edits the source item, so with another node's patch on the model, the source item of
  a P2P batch equals that node's own sampling of the source prompt (the other node keeps its
  effect on the rows the pack does not edit);
- the other node keeps its effect on the edited rows too: the edited item moves when the other
  patch is added, by an amount comparable to its effect on the source.
Where a combination cannot be honoured, the refusal is asserted, with its message.
"""

from __future__ import annotations

import pytest
import torch

from harness import comfyui, model_files, tiny_models

pytestmark = pytest.mark.comfy

STEPS, CFG, SEED, SIZE = 5, 5.0, 7, 16
SOURCE, EDIT = "a cat sitting on a mat", "a dog sitting on a mat"


def stock(name):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]


def run_stock(name: str, *args):
    return comfyui.run_node(stock(name), *args)


def pack(name: str):
    return stock(f"PromptEdit{name}")()


def sample(model, positive, negative, latent):
    import comfy.sample

    noise = comfy.sample.prepare_noise(latent["samples"], SEED, latent.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, STEPS, CFG, "euler", "normal", positive, negative,
                                   latent["samples"], seed=SEED, disable_pbar=True)


def p2p(model, edit, self_end=0.4):
    return pack("P2PAttentionControl").apply(model, edit, "replace", 0.0, 0.8, self_end, "coarse")[0]


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture
def scene(tiny_sd15_clip):
    """(positive batch, negative, latent batch, p2p_edit, source-alone positive, source-alone latent)."""
    clip = tiny_sd15_clip
    positive, latent, edit = pack("P2PPrompts").build(clip, {"samples": torch.zeros(1, 4, SIZE, SIZE)}, SOURCE, EDIT)
    alone = {"samples": latent["samples"][:1], "batch_index": [0]}
    return positive, comfyui.encode(clip, ""), latent, edit, comfyui.encode(clip, SOURCE), alone


def assert_composes(base, other, scene, self_end=0.4, orders=("before", "after")):
    """The identities above for `other(model) -> model`, applied before and/or after P2P."""
    positive, negative, latent, edit, source_positive, alone = scene
    other_alone = sample(other(base), source_positive, negative, alone)[0]
    p2p_alone = sample(p2p(base, edit, self_end), positive, negative, latent)
    other_effect = relative(other_alone, sample(base, source_positive, negative, alone)[0])
    assert other_effect > 1e-2, "the other patch must change the image for the test to mean anything"
    results = {}
    for order in orders:
        model = p2p(other(base), edit, self_end) if order == "before" else other(p2p(base, edit, self_end))
        results[order] = out = sample(model, positive, negative, latent)
        assert relative(out[0], other_alone) < 1e-4, f"{order}: the source item lost the other patch's effect"
        assert relative(out[1], p2p_alone[1]) > 0.2 * other_effect, f"{order}: the edit lost the other patch's effect"
        assert relative(out[1], out[0]) > 1e-3, f"{order}: the edit was lost"
    if len(results) == 2:
        assert relative(results["before"], results["after"]) < 1e-4
    return results


def test_perturbed_attention_guidance_composes_in_either_order(tiny_sd15, scene):
    assert_composes(tiny_sd15, lambda m: run_stock("PerturbedAttentionGuidance", m, 3.0), scene)


def test_self_attention_guidance_before_p2p_is_wrapped(tiny_sd15, scene):
    assert_composes(tiny_sd15, lambda m: run_stock("SelfAttentionGuidance", m, 1.0, 2.0), scene, orders=("before",))


def test_self_attention_guidance_after_p2p_works_without_injection_and_is_refused_with_it(tiny_sd15, scene):
    sag = lambda m: run_stock("SelfAttentionGuidance", m, 1.0, 2.0)  # noqa: E731
    assert_composes(tiny_sd15, sag, scene, self_end=0.0, orders=("after",))
    positive, negative, latent, edit, _, _ = scene
    with pytest.raises(ValueError, match=r"replaced the attn1 attention of layer \('middle', 0, 0\) with "
                                         r"nodes_sag\.SelfAttentionGuidance.*Apply that node before"):
        sample(sag(p2p(tiny_sd15, edit)), positive, negative, latent)


def test_freeu_v2_composes_in_either_order(tiny_sd15, scene):
    assert_composes(tiny_sd15, lambda m: run_stock("FreeU_V2", m, 1.3, 1.4, 0.9, 0.2), scene)


def test_a_lora_loaded_by_lora_loader_composes_in_either_order(tiny_sd15, tiny_sd15_clip, scene, tmp_path, monkeypatch):
    import folder_paths

    model_files.write_tiny_sd15_lora(tmp_path / "tiny_lora.safetensors", tiny_sd15)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    lora = lambda m: stock("LoraLoaderModelOnly")().load_lora_model_only(m, "tiny_lora.safetensors", 1.0)[0]  # noqa: E731
    assert_composes(tiny_sd15, lora, scene)


def test_a_controlnet_composes(tiny_sd15, scene):
    positive, negative, latent, edit, source_positive, alone = scene
    control_net = tiny_models.tiny_sd15_controlnet()
    hint = torch.rand(1, SIZE * 8, SIZE * 8, 3, generator=torch.Generator().manual_seed(0))
    apply = stock("ControlNetApplyAdvanced")()

    def controlled(conds):
        return apply.apply_controlnet(conds[0], conds[1], control_net, hint, 1.0, 0.0, 1.0)[:2]

    source_pos, source_neg = controlled((source_positive, negative))
    other_alone = sample(tiny_sd15, source_pos, source_neg, alone)[0]
    assert relative(other_alone, sample(tiny_sd15, source_positive, negative, alone)[0]) > 1e-2
    batch_pos, batch_neg = controlled((positive, negative))
    out = sample(p2p(tiny_sd15, edit), batch_pos, batch_neg, latent)
    assert relative(out[0], other_alone) < 1e-4
    assert relative(out[1], out[0]) > 1e-3


class ImagePromptPatch:
    """An attn2 replace patch as IPAdapter-style packs write them: text attention plus `weight`
    times attention to a few extra "image" tokens, installed per layer with a 3-part key."""

    def __init__(self, weight: float, tokens: int = 4):
        self.weight, self.tokens, self._kv = weight, tokens, {}

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        heads = extra_options["n_heads"]
        out = optimized_attention(q, k, v, heads)
        width = q.shape[-1]
        if width not in self._kv:
            g = torch.Generator().manual_seed(width)
            self._kv[width] = torch.randn(2, 1, self.tokens, width, generator=g) * 3
        ik, iv = (t.to(q.device, q.dtype).expand(q.shape[0], -1, -1) for t in self._kv[width])
        return out + self.weight * optimized_attention(q, ik, iv, heads)

    def apply(self, model):
        from comfyui_prompt_edit.families.unet.install import unet_layer_layout

        patched = model.clone()
        for key in unet_layer_layout(model).levels:
            patched.set_model_attn2_replace(self, *key)
        return patched


def test_another_packs_attn2_replace_before_p2p_is_wrapped_exactly(tiny_sd15, scene):
    assert_composes(tiny_sd15, ImagePromptPatch(1.0).apply, scene, orders=("before",))
    positive, negative, latent, edit, _, _ = scene
    # An additive patch contributing nothing leaves exactly the P2P edit.
    zero = sample(p2p(ImagePromptPatch(0.0).apply(tiny_sd15), edit), positive, negative, latent)
    assert relative(zero, sample(p2p(tiny_sd15, edit), positive, negative, latent)) < 1e-5


def test_another_packs_attn2_replace_after_p2p_is_refused_naming_it(tiny_sd15, scene):
    positive, negative, latent, edit, _, _ = scene
    with pytest.raises(ValueError, match=r"replaced the attn2 attention of layer .* with "
                                         r"test_composition_comfy\.ImagePromptPatch.*before P2P Attention Control"):
        sample(ImagePromptPatch(1.0).apply(p2p(tiny_sd15, edit)), positive, negative, latent)


def test_p2p_twice_on_one_model_is_refused_and_two_edits_from_one_model_work(tiny_sd15, tiny_sd15_clip, scene):
    positive, negative, latent, edit, _, _ = scene
    with pytest.raises(ValueError, match="already went through P2P Attention Control; apply it once"):
        p2p(p2p(tiny_sd15, edit), edit)
    other_positive, other_latent, other_edit = pack("P2PPrompts").build(
        tiny_sd15_clip, {"samples": torch.zeros(1, 4, SIZE, SIZE)}, SOURCE, "a cat sitting on a rug")
    first, second = p2p(tiny_sd15, edit), p2p(tiny_sd15, other_edit)
    a = sample(first, positive, negative, latent)
    b = sample(second, other_positive, negative, other_latent)
    assert relative(a[0], b[0]) < 1e-4 and relative(a[1], b[1]) > 1e-3
    assert relative(sample(first, positive, negative, latent), a) == 0  # the same patched model, sampled again


def test_apply_inversion_p2p_and_stochastic_embeddings_compose_in_any_order_beside_another_pack(tiny_sd15, tiny_sd15_clip):
    clip, steps = tiny_sd15_clip, 4
    positive_source, negative = comfyui.encode(clip, SOURCE), comfyui.encode(clip, "")
    photo = {"samples": torch.randn(1, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(1))}
    with torch.inference_mode():
        noisy, inversion = pack("InvertImage").invert(tiny_sd15, positive_source, negative, photo, "null-text fast",
                                                      "ddim_uniform", steps, CFG, 1, 1e-5)
    positive, latent, edit = pack("P2PPrompts").build(clip, noisy, SOURCE, EDIT)
    other = ImagePromptPatch(1.0).apply

    def apply_inversion(m):
        return pack("ApplyInversion").apply(m, inversion)[0]

    def run(model, positive, latent):
        with torch.inference_mode():
            return stock("KSamplerAdvanced")().sample(model, "disable", 0, steps, CFG, "euler", "ddim_uniform", positive,
                                                      negative, latent, 0, 10000, "disable")[0]["samples"]

    source_alone = run(apply_inversion(other(tiny_sd15)), positive_source, noisy)[0]
    # Stochastic Embeddings sits between P2P Prompts and P2P Attention Control (it repeats the edits);
    # in "embedding VAE" mode it patches the model it is given, wherever that is in the chain.
    orders = {
        "inversion before p2p": lambda m, e: p2p(apply_inversion(m), e),
        "inversion after p2p": lambda m, e: apply_inversion(p2p(m, e)),
    }
    results = {}
    for name, chain in orders.items():
        model, varied_positive, varied_latent, varied_edit = pack("StochasticEmbeddings").vary(
            other(tiny_sd15), positive, latent, "token noise", 2, 3, 0.3, "dog", edit)
        assert varied_edit.batch_size == 3
        results[name] = out = run(chain(model, varied_edit), varied_positive, varied_latent)
        assert relative(out[0], source_alone) < 1e-4, f"{name}: the source item changed"
        assert relative(out[1], out[2]) > 1e-3, f"{name}: the variations do not vary"
    first, second = results.values()
    assert relative(first, second) < 1e-4


def test_a_model_function_wrapper_already_on_the_model_is_kept_in_either_order(tiny_sd15, scene):
    def damped(model):  # as packs write them: wrap the UNet call, change its output
        patched = model.clone()
        patched.set_model_unet_function_wrapper(
            lambda apply_model, args: 0.8 * apply_model(args["input"], args["timestep"], **args["c"]))
        return patched

    assert_composes(tiny_sd15, damped, scene)
