"""The pack on the real layer layouts of SD1.5, SD2.1-768-v and SDXL base (random weights in bf16,
computed in fp32 by ComfyUI's manual cast), through the stock samplers: 2 steps at 128² pixels.

Run with --full-size (CI does); about a minute per family on 2 CPU cores, 7 GB at the peak.
"""

from __future__ import annotations

import pytest
import torch

from harness import comfyui, tiny_models

pytestmark = [pytest.mark.comfy, pytest.mark.full_size]

STEPS, CFG, SEED, LATENT = 2, 5.0, 3, 16
SOURCE = "a photo of a cat sitting on a mat"
EDITS = {"replace": "a photo of a dog sitting on a mat", "refine": "a photo of a fluffy cat sitting on a red mat",
         "reweight": SOURCE}
# Cross-attention layers, their coarsest level outside the middle block, and the layers that
# "coarse" self-attention injection patches (that level and the middle block), as the real
# checkpoints have them: SD1.5/2.1 one transformer per attention block on levels 0-2 and the
# middle; SDXL none on level 0, depth 2 on level 1, depth 10 on level 2 and in the middle.
LAYOUT = {"sd15": (16, 2, 6), "sd21v": (16, 2, 6), "sdxl": (70, 2, 60)}


@pytest.fixture(scope="module", params=sorted(tiny_models.FULL_SIZE))
def family(request):
    """(family, ModelPatcher, CLIP); one family in memory at a time."""
    import gc

    name = request.param
    comfyui.ensure_comfyui()
    import comfy.model_management as mm

    yield name, tiny_models.full_size_model(name), tiny_models.full_width_clip(name)
    # ComfyUI keeps every model it loaded for sampling in its loaded list: let this family go
    # before the next is built (SDXL alone is 5 GB).
    mm.unload_all_models()
    mm.cleanup_models()
    gc.collect()


def pack(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[f"PromptEdit{name}"]()


def sample(model, positive, negative, latent):
    import comfy.sample

    noise = comfy.sample.prepare_noise(latent["samples"], SEED, latent.get("batch_index"))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, STEPS, CFG, "euler", "normal", positive, negative,
                                   latent["samples"], seed=SEED, disable_pbar=True)


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


class ShapeRecorder:
    """An attn2 replace patch that computes plain attention and records each layer's activation
    shape and context width (the composition wraps it, so it sees every call)."""

    def __init__(self):
        self.seen = {}

    def __deepcopy__(self, memo):
        return self  # ComfyUI before 0.33 deep-copies patches on clone(); keep one record

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        block = extra_options["block"]
        key = (block[0], int(block[1]), int(extra_options.get("block_index", 0)))
        self.seen[key] = (tuple(extra_options["activations_shape"][-2:]), k.shape[1])
        return optimized_attention(q, k, v, extra_options["n_heads"])


def test_the_layer_layout_is_the_real_one(family):
    from comfy.ldm.modules.attention import BasicTransformerBlock
    from comfyui_prompt_edit.families.unet.install import unet_layer_layout

    name, model, clip = family
    layout = unet_layer_layout(model)
    blocks = sum(isinstance(m, BasicTransformerBlock) and m.attn2 is not None for m in model.model.diffusion_model.modules())
    count, coarse, self_layers = LAYOUT[name]
    assert len(layout.levels) == blocks == count
    assert layout.coarse_level == coarse
    assert len(layout.self_injection_keys("coarse")) == self_layers

    positive, latent, edit = pack("P2PPrompts").build(clip, {"samples": torch.zeros(1, 4, LATENT, LATENT)},
                                                      SOURCE, EDITS["replace"])
    recorder = ShapeRecorder()
    observed = model.clone()
    for key in layout.levels:
        observed.set_model_attn2_replace(recorder, *key)
    patched, controller = pack("P2PAttentionControl").apply(observed, edit, "replace", 0.0, 1.0, 0.5, "coarse")[:2]
    sample(patched, positive, comfyui.encode(clip, ""), latent)
    assert set(recorder.seen) == set(layout.levels)
    for key, level in layout.levels.items():
        (h, w), columns = recorder.seen[key]
        assert (h, w) == (LATENT >> level, LATENT >> level), f"{key}: level {level} but {h}x{w} activations"
        assert columns == edit.num_columns == 77
    assert controller.store.spatial == (LATENT >> coarse, LATENT >> coarse)


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_every_edit_kind_samples_with_the_source_untouched(family, kind):
    name, model, clip = family
    positive, latent, edit = pack("P2PPrompts").build(clip, {"samples": torch.zeros(1, 4, LATENT, LATENT)},
                                                      SOURCE, EDITS[kind])
    if kind == "reweight":
        edit = pack("P2PReweight").reweight(edit, clip, "cat", 3.0)[0]
    negative = comfyui.encode(clip, "")
    patched = pack("P2PAttentionControl").apply(model, edit, kind, 0.0, 0.8, 0.5, "coarse")[0]
    out = sample(patched, positive, negative, latent)
    alone = sample(model, comfyui.encode(clip, SOURCE), negative, {"samples": latent["samples"][:1], "batch_index": [0]})
    assert torch.isfinite(out).all()
    assert relative(out[0], alone[0]) < 1e-3, f"{name}: the source item changed"
    assert relative(out[1], out[0]) > 1e-3, f"{name}: the {kind} edit changed nothing"


def test_an_inversion_edit_and_its_variations_run_end_to_end(family):
    name, model, clip = family
    positive_source, negative = comfyui.encode(clip, SOURCE), comfyui.encode(clip, "")
    photo = {"samples": torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(0))}
    with torch.inference_mode():
        noisy, inversion = pack("InvertImage").invert(model, positive_source, negative, photo, "null-text fast",
                                                      "ddim_uniform", STEPS, CFG, 1, 1e-5)
    assert torch.isfinite(inversion.unconds).all()
    positive, latent, edit = pack("P2PPrompts").build(clip, noisy, SOURCE, EDITS["replace"])
    base, positive, latent, edit = pack("StochasticEmbeddings").vary(model, positive, latent, "token noise", 2, 1, 0.3, "dog", edit)
    inverted = pack("ApplyInversion").apply(base, inversion)[0]
    patched = pack("P2PAttentionControl").apply(inverted, edit, "replace", 0.0, 0.8, 0.5, "coarse")[0]

    def run(model, positive, latent):
        import nodes

        with torch.inference_mode():
            return nodes.NODE_CLASS_MAPPINGS["KSamplerAdvanced"]().sample(
                model, "disable", 0, STEPS, CFG, "euler", "ddim_uniform", positive, negative, latent, 0, 10000,
                "disable")[0]["samples"]

    out = run(patched, positive, latent)
    reconstruction = run(inverted, positive_source, noisy)
    assert out.shape[0] == 3 and torch.isfinite(out).all()
    assert relative(out[0], reconstruction[0]) < 1e-3, f"{name}: the source branch is not the reconstruction"
    assert relative(out[1], out[2]) > 1e-3, f"{name}: the variations do not vary"
