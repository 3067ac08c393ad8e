"""Cost of Prompt-to-Prompt attention control over plain sampling of the same batch.

One process samples the same 4-item batch (1 source + 3 edited prompts, one shared initial noise,
same sampler, steps and cfg) with:

* ``plain``:           the unpatched model;
* ``p2p fast``:        'P2P Attention Control' with every edit kind on (a word replace, two chained
                       'P2P Reweight's, 'P2P Local Blend', cross-attention injection 0-0.8,
                       self-attention injection 0-0.4 on the coarse layers), fast attention path;
* ``p2p reference``:   the same edit on the reference path (materialised attention maps);
* ``p2p fast, self all``: the fast edit with self-attention injection on every layer.

Time is the median of ``--repeats`` runs after one warm-up run per variant; the variants are
interleaved (a, b, c, d, a, b, c, d, ...) so that drift of a shared machine hits all of them alike.
Memory is measured in one extra run per variant after the timed rounds, as the peak of torch's
tensor allocations during the call above what was allocated before it: on CUDA with
``max_memory_allocated``, on the CPU from the profiler's allocation events (torch's CPU
allocator reports every tensor to it; it slows the run, hence not in the timed rounds). Both
count tensors exactly and ignore Python objects and allocator overhead. A 32 MiB probe tensor
checks the meter before use. (The process's peak resident memory was tried for the CPU and
dropped: glibc keeps and re-uses freed heap blocks, so it varied by +-30 % between runs.)

The last line is machine readable: ``p2p_time_ratio=X p2p_mem_ratio=Y ref_time_ratio=Z``.

Default: CPU, the test harness's tiny SD1.5-shaped model, 128² image (16² latent), 10 euler steps.
``--full``: a full SD1.5-shaped UNet with random weights: on CUDA in fp16 at 512², 50 euler steps;
on the CPU in fp32 at 256², 3 steps.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import common  # first: it prepares the process for torch and puts tests/ on sys.path
import torch

from harness import comfyui  # after common, which puts tests/ on sys.path

SOURCE = "a photo of a cat riding a bicycle on a street"
EDITS = (
    "a photo of a dog riding a bicycle on a street",
    "a photo of a teddy bear riding a bicycle on a street",
    "a photo of a fox riding a bicycle on a street",
)
REWEIGHTS = (("bicycle", 2.0), ("street", 0.5))  # chained 'P2P Reweight' nodes
BLEND = ("cat", "dog, teddy bear, fox", 0.3, 0.2)  # source words, target words, threshold, start
CROSS_WINDOW = (0.0, 0.8)
SELF_END = 0.4


@dataclass(frozen=True)
class Variant:
    name: str
    path: str | None  # attention_path of 'P2P Attention Control'; None = the unpatched model
    self_layers: str = "coarse"


PLAIN = Variant("plain", None)
FAST = Variant("p2p fast", "fast")
REFERENCE = Variant("p2p reference", "reference")
FAST_ALL = Variant("p2p fast, self all", "fast", "all")
VARIANTS = (PLAIN, FAST, REFERENCE, FAST_ALL)


# ------------------------------------------------------------------------------------------------
# Setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="full SD1.5-shaped UNet: fp16 at 512², 50 steps on CUDA; fp32 at 256², 3 steps on the CPU")
    parser.add_argument("--steps", type=int, help="euler steps (default 10; --full 50 on CUDA, 3 on the CPU)")
    parser.add_argument("--size", type=int, help="image side in pixels, multiple of 8 (default 128; --full 512 / 256)")
    parser.add_argument("--repeats", type=int, help="timed runs per variant after the warm-up (default 5, --full on the CPU 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda for --full when there is one, else cpu")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if args.full and torch.cuda.is_available() else "cpu")
    full_cpu = args.full and args.device == "cpu"
    args.steps = args.steps or (3 if full_cpu else 50 if args.full else 10)
    args.size = args.size or (256 if full_cpu else 512 if args.full else 128)
    args.repeats = args.repeats or (2 if full_cpu else 5)
    if args.size % 8 or args.size < 64:
        parser.error("--size must be a multiple of 8 and at least 64")
    if args.steps < 2 or args.repeats < 1:
        parser.error("--steps must be at least 2 and --repeats at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    return args


@dataclass
class Workload:
    """Everything one sampling call needs, shared by all variants."""

    positive: list
    negative: list
    latent: torch.Tensor
    noise: torch.Tensor
    steps: int


def build_workload(nodes: Any, model: Any, clip: Any, size: int, steps: int) -> tuple[Workload, dict[Variant, Any]]:
    """Run the pack's nodes as a workflow would; return the batch and each variant's model."""
    import comfy.sample

    mapping = nodes.NODE_CLASS_MAPPINGS
    empty = {"samples": torch.zeros(1, 4, size // 8, size // 8)}
    positive, latent, edit = mapping["PromptEditP2PPrompts"]().build(clip, empty, SOURCE, "\n".join(EDITS))
    for words, weight in REWEIGHTS:
        (edit,) = mapping["PromptEditP2PReweight"]().reweight(edit, clip, words, weight)
    (edit,) = mapping["PromptEditP2PLocalBlend"]().blend(edit, clip, *BLEND)
    control = mapping["PromptEditP2PAttentionControl"]()
    models = {
        v: model if v.path is None else control.apply(
            model, edit, "replace", *CROSS_WINDOW, SELF_END, v.self_layers, attention_path=v.path)[0]
        for v in VARIANTS
    }
    noise = comfy.sample.prepare_noise(latent["samples"], common.SEED, latent["batch_index"])
    workload = Workload(positive, comfyui.encode(clip, ""), latent["samples"], noise, steps)
    return workload, models


def sample(model: Any, work: Workload) -> torch.Tensor:
    """One stock ``comfy.sample.sample`` call (what KSampler runs)."""
    import comfy.sample

    with torch.inference_mode():
        return comfy.sample.sample(model, work.noise, work.steps, common.CFG, common.SAMPLER, common.SCHEDULER,
                                   work.positive, work.negative, work.latent, seed=common.SEED, disable_pbar=True)


# ------------------------------------------------------------------------------------------------
# Measuring


def measure(
    models: dict[Variant, Any], work: Workload, repeats: int, device: str
) -> tuple[dict[Variant, common.Result], dict[Variant, torch.Tensor], str]:
    """Warm-up, interleaved timed rounds, then one memory run per variant (outputs kept)."""
    for variant in VARIANTS:
        sample(models[variant], work)
    results = {v: common.Result([]) for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            common.synchronize(device)
            start = time.perf_counter()
            sample(models[variant], work)
            common.synchronize(device)
            results[variant].times.append(time.perf_counter() - start)
    meter = common.CudaPeak() if device == "cuda" else common.TensorPeak()  # not while timing: the profiler slows
    meter_note = common.check_meter(meter, device)
    outputs = {}
    for variant in VARIANTS:
        with meter:
            outputs[variant] = sample(models[variant], work)
        results[variant].mib = meter.mib
    method = "torch.cuda.max_memory_allocated" if device == "cuda" else "torch.profiler allocation events"
    return results, outputs, f"peak tensor memory above the call's start, {method} ({meter_note})"


# ------------------------------------------------------------------------------------------------
# Report


def report(results: dict[Variant, common.Result], outputs: dict[Variant, torch.Tensor], unet_dtype: torch.dtype) -> None:
    plain = results[PLAIN]
    print(f"\n{'variant':<20} {'median s':>9} {'min s':>8} {'peak MiB':>9} {'time x':>7} {'mem x':>7}")
    for variant, r in results.items():
        print(f"{variant.name:<20} {r.median:>9.3f} {min(r.times):>8.3f} {r.mib:>9.1f} "
              f"{r.median / plain.median:>7.2f} {r.mib / plain.mib:>7.2f}")
    tolerance = 1e-3 if unet_dtype == torch.float32 else 5e-2  # as the pack's fast-vs-reference tests
    fast_vs_ref = common.rel_diff(outputs[FAST], outputs[REFERENCE])
    source_vs_plain = common.rel_diff(outputs[FAST][:1], outputs[PLAIN][:1])
    edits_vs_plain = common.rel_diff(outputs[FAST][1:], outputs[PLAIN][1:])
    print(f"\nfast vs reference output: max rel diff {fast_vs_ref:.2e} "
          f"({'ok' if fast_vs_ref <= tolerance else f'MISMATCH, above {tolerance:g}'})")
    print(f"source item vs plain: {source_vs_plain:.2e} (unedited); edited items vs plain: {edits_vs_plain:.2e} (edited)")
    if not all(torch.isfinite(o).all() for o in outputs.values()):
        print("WARNING: non-finite values in the sampled latents; the timings may not be representative")
    print(f"p2p_time_ratio={results[FAST].median / plain.median:.2f} "
          f"p2p_mem_ratio={results[FAST].mib / plain.mib:.2f} "
          f"ref_time_ratio={results[REFERENCE].median / plain.median:.2f}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    nodes = common.init_comfyui(args.device)
    from comfy.ldm.modules.attention import optimized_attention

    model, clip, shape = common.sd15(args.full, args.device, common.SEED)
    work, models = build_workload(nodes, model, clip, args.size, args.steps)
    threads = f", {torch.get_num_threads()} torch threads" if args.device == "cpu" else ""
    print(f"device {args.device}{threads}; {shape}; attention {optimized_attention.__name__}")
    print(f"batch 1 source + {len(EDITS)} edits, {args.size}² image ({args.size // 8}² latent), {common.SAMPLER} "
          f"{args.steps} steps, cfg {common.CFG}; warm-up + median of {args.repeats} interleaved runs per variant")
    results, outputs, memory_note = measure(models, work, args.repeats, args.device)
    print(f"memory: {memory_note}")
    report(results, outputs, model.model.get_dtype())


if __name__ == "__main__":
    main()
