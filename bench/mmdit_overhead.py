"""Cost of the Prompt-to-Prompt edits on MMDiT models (Flux, SD3) over plain sampling of the same batch.

One process samples the same 2-item batch (the source prompt and one edited prompt, one shared
initial noise, euler, the 'simple' schedule) with:

* ``plain``:        the unpatched model;
* ``qk 0.2``:       'P2P Attention Control' with the qk edit over the first 20 % of the steps (the
                    paper's default): the edit's image queries and keys are the source's; the word
                    maps (local blend, P2P Attention Maps) are recorded in every double block;
* ``qk 0.2, no maps``: the same without recording the maps (what the maps cost);
* ``qk all steps``: the same over every step (the most the edit can cost);
* ``probabilities``: the word-level edit on the image→text block of the joint softmax (a word
                    replace over the first 80 % of the steps), recomputed in row chunks.

Time is the median of ``--repeats`` interleaved runs after one warm-up run per variant; memory is
the peak of torch's tensor allocations in one extra run per variant (bench/common.py's meters).

The last line is machine readable:
``flux_qk_time_ratio=… flux_qk_mem_ratio=… flux_qk_no_maps_time_ratio=… flux_qk_all_time_ratio=…
flux_probabilities_time_ratio=…
flux_probabilities_mem_ratio=… sd3_…``.

Default: CPU, the tests' tiny Flux and SD3 (tests/harness/mmdit_models.py), a 16² latent, 10 steps;
then the tiny Qwen-Image (16² latent), HunyuanImage 2.1 (8² latent, patch 1), Flux.2 (klein layout,
8² latent at patch 1, 512 text columns), Chroma (16² latent) and Z-Image (16² latent, its caption
padded to 32; the wrapper route), with hand-made prompts on random context (their LLM text encoders
are not built); Flux.2 and Z-Image where ComfyUI has them.
``--full-block``: Flux's real block width (hidden 3072, 24 heads, T5 context 4096, 256 text
tokens) with one double and one single block, random weights, fp32, a 32² latent, 5 steps.
"""

from __future__ import annotations

import argparse
from typing import Any

import common  # first: it prepares the process for torch and puts tests/ on sys.path
import torch

from harness import comfyui, hunyuan_image_models, mmdit_models, tiny_models, z_image_models  # after common, which puts tests/ on sys.path

# name -> (mmdit_mechanism, qk_end); the probabilities edit injects over cross_attention 0-0.8
VARIANTS = {"plain": None, "qk 0.2": ("qk", 0.2), "qk 0.2, no maps": ("qk", 0.2), "qk all steps": ("qk", 1.0),
            "probabilities": ("probabilities", 0.2)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-block", action="store_true", help="Flux's real block width, one block of each kind")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    return parser.parse_args(argv)


def full_block_flux(seed: int = 0) -> Any:
    """Flux-dev at its real width (3072 hidden, 24 heads, RoPE axes 16/56/56, T5 4096, CLIP-L
    pooled 768) with one double and one single block: 0.5 G parameters, random weights."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = mmdit_models.flux_unet_config(hidden=3072, heads=24, depth=1, single=1)
    config.update(axes_dim=[16, 56, 56], context_in_dim=4096, vec_in_dim=768)
    model_config = comfy.supported_models.Flux(config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    tiny_models.fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def conditioning(batch: int, tokens: int, width: int, pooled: int, seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, width, generator=generator),
             {"pooled_output": torch.randn(batch, pooled, generator=generator)}]]


SOURCE, EDIT = "a photo of a cat riding a bicycle on a street", "a photo of a dog riding a bicycle on a street"


def workloads(nodes: Any, full_block: bool) -> list[tuple[str, Any, dict[str, Any]]]:
    """(family, model, sampling arguments and the P2P edit) of each benchmarked model. The prompts
    go through 'P2P Prompts' with the tests' tiny T5 encoders (the real T5 tokenizer); at the full
    block width their conditioning is replaced by random T5-XXL-wide columns of the same layout."""
    prompts = nodes.NODE_CLASS_MAPPINGS["PromptEditP2PPrompts"]()
    sd3_widths = {"context_dim": mmdit_models.SD3_CONTEXT_DIM, "pooled_dim": mmdit_models.SD3_TINY_POOLED_DIM}
    if full_block:
        families = [("flux", full_block_flux(), mmdit_models.tiny_flux_clip(), (4096, 768), 32, 5)]  # 5 steps: qk 0.2 edits step 0
    else:
        families = [("flux", mmdit_models.tiny_flux_model(), mmdit_models.tiny_flux_clip(), None, 16, 10),
                    ("sd3", mmdit_models.tiny_sd3_model(**sd3_widths), mmdit_models.tiny_sd3_clip(), None, 16, 10)]
    out = []
    for family, model, clip, widths, size, steps in families:
        latent = torch.zeros(1, mmdit_models.MMDIT_LATENT_CHANNELS, size, size)
        positive, batch, edit = prompts.build(clip, {"samples": latent}, SOURCE, EDIT)
        negative = comfyui.encode(clip, "")
        if widths is not None:
            columns = positive[0][0].shape[1]
            positive = conditioning(2, columns, *widths, seed=1)
            negative = conditioning(1, columns, *widths, seed=2)
        samples = batch["samples"]
        noise = torch.randn(samples[:1].shape, generator=torch.Generator().manual_seed(common.SEED)).expand_as(samples)
        out.append((family, model, {"positive": positive, "negative": negative, "latent": samples,
                                    "noise": noise.contiguous(), "steps": steps, "edit": edit}))
    return out if full_block else out + newer_family_workloads()


def hand_made_edit(encoder: str, columns: int, source: str = SOURCE, edited: str = EDIT) -> Any:
    """A 2-prompt P2P edit with word columns, as P2P Prompts would make it with ``encoder``
    (Flux.2's and Chroma's tiny text encoders are not built here)."""
    from comfyui_prompt_edit.attention.edit_spec import P2PEdit
    from comfyui_prompt_edit.attention.tokens import END, PAD, PromptTokens, Word

    def prompt(text: str) -> Any:
        words = text.split()
        strings = (*words, END) + (PAD,) * (columns - len(words) - 1)
        return PromptTokens(text, strings, tuple(Word(w, (i,)) for i, w in enumerate(words)), columns)

    return P2PEdit(prompt(source), (prompt(edited),), encoder=encoder)


def newer_family_workloads() -> list[tuple[str, Any, dict[str, Any]]]:
    """Qwen-Image, HunyuanImage 2.1, Flux.2 (klein layout, 512 left-padded text) and Chroma with
    random conditioning of 16 columns and a hand-made edit, then Z-Image; Flux.2 and Z-Image where
    this ComfyUI has them."""
    from comfyui_prompt_edit.attention.edit_spec import FLUX2_ENCODER, T5_ENCODER
    from comfyui_prompt_edit.families import UnsupportedModelError, family_by_id
    from harness import chroma_models, flux2_models

    families = [("chroma", chroma_models.tiny_chroma_model(), (16, 16, 16), T5_ENCODER,
                 chroma_models.CHROMA_CONTEXT_DIM, chroma_models.CHROMA_POOLED_DIM)]
    try:
        family_by_id("flux2")
        families.insert(0, ("flux2", flux2_models.tiny_flux2_model(guidance_embed=False), (128, 8, 8), FLUX2_ENCODER,
                            flux2_models.FLUX2_CONTEXT_DIM, 16))
    except UnsupportedModelError:
        pass
    out = []
    for family, model, shape, encoder, width, pooled in families:
        samples = torch.zeros(2, *shape)
        noise = torch.randn(1, *shape, generator=torch.Generator().manual_seed(common.SEED)).expand_as(samples)
        out.append((family, model, {"positive": conditioning(2, 16, width, pooled, seed=1),
                                    "negative": conditioning(1, 16, width, pooled, seed=2), "latent": samples,
                                    "noise": noise.contiguous(), "steps": 10, "edit": hand_made_edit(encoder, 16)}))
    out = [qwen_image_workload(), hunyuan_image_workload()] + out
    if z_image_models.has_z_image():  # a DIFFUSION_MODEL wrapper instead of block patches
        out.append(z_image_workload())
    return out


def z_image_workload() -> tuple[str, Any, dict[str, Any]]:
    """The tests' tiny Z-Image (dim 256, two layers) with 7 random caption columns (padded to 32),
    a 16² latent (64 image tokens)."""
    from comfyui_prompt_edit.attention.edit_spec import Z_IMAGE_ENCODER

    edit = hand_made_edit(Z_IMAGE_ENCODER, 7, "a red cat sits here", "a red dog sits here")
    samples = torch.zeros(2, z_image_models.NEXTDIT_LATENT_CHANNELS, 16, 16)
    noise = torch.randn(samples[:1].shape, generator=torch.Generator().manual_seed(common.SEED)).expand_as(samples)
    return "z_image", z_image_models.tiny_z_image_model(), {
        "positive": z_image_models.batch_conditioning([1, 2]), "negative": z_image_models.random_conditioning(seed=99),
        "latent": samples, "noise": noise.contiguous(), "steps": 10, "edit": edit}


def qwen_image_workload() -> tuple[str, Any, dict[str, Any]]:
    """The tests' tiny Qwen-Image (5-D latent, 16²) with random 11-column contexts and hand-made
    prompts at those columns (its Qwen2.5-VL encoder is not built: 3.8 GB)."""
    from harness import qwen_image_models as qwen

    from comfyui_prompt_edit.attention.edit_spec import QWEN_IMAGE_ENCODER

    columns = max(len(SOURCE.split()), len(EDIT.split())) + 1
    edit = hand_made_edit(QWEN_IMAGE_ENCODER, columns)
    positive = [[torch.cat([qwen.random_conditioning(tokens=columns, seed=s)[0][0] for s in (1, 2)]), {}]]
    samples = qwen.latent(2, 16)
    noise = torch.randn(samples[:1].shape, generator=torch.Generator().manual_seed(common.SEED)).expand_as(samples)
    return ("qwen_image", qwen.tiny_qwen_image_model(),
            {"positive": positive, "negative": qwen.random_conditioning(tokens=5, seed=3), "latent": samples,
             "noise": noise.contiguous(), "steps": 10, "edit": edit})


def hunyuan_image_workload() -> tuple[str, Any, dict[str, Any]]:
    """The tiny real-CFG HunyuanImage 2.1 (8² latent, patch 1) with random Qwen columns."""
    from comfyui_prompt_edit.attention.edit_spec import HUNYUAN_IMAGE_ENCODER

    columns = max(len(SOURCE.split()), len(EDIT.split())) + 1
    positive = [[torch.cat([hunyuan_image_models.random_conditioning(tokens=columns, seed=s)[0][0] for s in (1, 2)]),
                 {}]]
    latent = torch.zeros(2, hunyuan_image_models.HUNYUAN_LATENT_CHANNELS, 8, 8)
    noise = torch.randn(latent[:1].shape, generator=torch.Generator().manual_seed(common.SEED)).expand_as(latent)
    return ("hunyuan_image", hunyuan_image_models.tiny_hunyuan_image_model(),
            {"positive": positive, "negative": hunyuan_image_models.random_conditioning(seed=99), "latent": latent,
             "noise": noise.contiguous(), "steps": 10, "edit": hand_made_edit(HUNYUAN_IMAGE_ENCODER, columns)})


def sample(model: Any, work: dict[str, Any]) -> torch.Tensor:
    import comfy.sample

    with torch.inference_mode():
        return comfy.sample.sample(model, work["noise"], work["steps"], 1.0, "euler", "simple", work["positive"],
                                   work["negative"], work["latent"], seed=common.SEED, disable_pbar=True)



def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    nodes = common.init_comfyui("cpu")
    control = nodes.NODE_CLASS_MAPPINGS["PromptEditP2PAttentionControl"]()
    print(f"CPU, {torch.get_num_threads()} threads; batch 1 source + 1 edit, cfg 1, euler/simple; "
          f"memory: {common.check_meter(common.TensorPeak(), 'cpu')}")
    summary = []
    for family, model, work in workloads(nodes, args.full_block):
        models = {}
        for name, variant in VARIANTS.items():
            if variant is None:
                models[name] = model
                continue
            models[name], handle = control.apply(model, work["edit"], "replace", 0.0, 0.8, 0.4, "coarse",
                                                 qk_end=variant[1], mmdit_mechanism=variant[0])
            if name.endswith("no maps"):
                handle.recorder.store.columns = ()  # no column worth a map: the recorder is not installed
        results, outputs = common.measure_interleaved(sample, models, work, args.repeats)
        plain = results["plain"]
        print(f"{family}: {work['latent'].shape[-1]}² latent, {work['positive'][0][0].shape[1]} text tokens, "
              f"{work['steps']} steps; vs plain: the source's and the edit's max |a-b| / max |b|")
        for name, result in results.items():
            source, edit = (common.rel_diff(outputs[name][rows], outputs["plain"][rows]) for rows in (slice(0, 1), slice(1, None)))
            print(f"  {name:15s} {result.median * 1000:9.1f} ms  x{result.median / plain.median:.2f}   "
                  f"{result.mib:8.1f} MiB  x{result.mib / plain.mib:.2f}   source {source:.1e}, edit {edit:.1e}")
        summary.append(f"{family}_qk_time_ratio={results['qk 0.2'].median / plain.median:.2f} "
                       f"{family}_qk_mem_ratio={results['qk 0.2'].mib / plain.mib:.2f} "
                       f"{family}_qk_no_maps_time_ratio={results['qk 0.2, no maps'].median / plain.median:.2f} "
                       f"{family}_qk_all_time_ratio={results['qk all steps'].median / plain.median:.2f} "
                       f"{family}_probabilities_time_ratio={results['probabilities'].median / plain.median:.2f} "
                       f"{family}_probabilities_mem_ratio={results['probabilities'].mib / plain.mib:.2f}")
    print(" ".join(summary))


if __name__ == "__main__":
    main()
