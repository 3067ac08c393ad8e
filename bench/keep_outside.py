"""The cost of keeping everything else: an instruction edit with the source branch and a mask vs
the stock instruction edit of the same image, in one process.

The tests' tiny Qwen-Image (tests/harness/qwen_image_models.py) on a 32² latent with the photo as
a reference latent (Qwen-Image-Edit's layout: [text, image, reference]), real CFG 2.5, euler,
'simple', ``--steps`` steps, hand-made instruction contexts (the Qwen2.5-VL encoder is not built):

* ``stock``:        KSamplerAdvanced from noise, batch 1 (what an instruction edit costs today);
* ``source branch``: the same sampler from the photo's direct inversion, batch 2 [source, edit],
                    with Apply Inversion (the source item is the photo again);
* ``keep (mask)``:  that, with Keep Outside Mask on a MASK (left half, dilation 1, feathering 1);
* ``keep (auto)``:  the same with the automatic mask;
* ``inversion``:    Invert Image (direct), once per photo (reused by every edit of it).

Time is the median of ``--repeats`` interleaved runs after a warm-up; memory the peak of torch's
tensor allocations in one extra run (bench/common.py). The last line is machine readable:
``source_branch_time_ratio=… keep_mask_time_ratio=… keep_mask_mem_ratio=… keep_auto_time_ratio=…
inversion_time_ratio=…`` (each against ``stock``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import common  # first: it prepares the process for torch and puts tests/ on sys.path
import torch

CFG, SIZE = 2.5, 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (median)")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    nodes = common.init_comfyui("cpu")
    from harness import qwen_image_models as qwen

    node = {name: nodes.NODE_CLASS_MAPPINGS[name]() for name in (
        "KSamplerAdvanced", "PromptEditInvertImage", "PromptEditApplyInversion", "PromptEditKeepOutsideMask")}
    model = qwen.tiny_qwen_image_model()
    photo = torch.randn(1, qwen.QWEN_LATENT_CHANNELS, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))

    def with_reference(conditioning: list) -> list:
        return [[c, {**extra, "reference_latents": [photo]}] for c, extra in conditioning]

    instruction = with_reference(qwen.random_conditioning(seed=2))
    source = with_reference(qwen.random_conditioning(seed=1))
    negative = with_reference(qwen.random_conditioning(seed=99))
    mask = torch.zeros(1, SIZE * 8, SIZE * 8)
    mask[..., : SIZE * 4] = 1

    def invert() -> tuple[dict, Any]:
        with torch.inference_mode():
            return node["PromptEditInvertImage"].invert(model, source, negative, {"samples": photo}, "direct", "simple",
                                                        args.steps, CFG, 0, 1e-5)

    noisy, inversion = invert()
    applied = node["PromptEditApplyInversion"].apply(model, inversion)[0]
    keeps = {mode: node["PromptEditKeepOutsideMask"].apply(applied, inversion, noisy, mode, 0.3, 0.2, 1, 1, mask=mask)
             for mode in ("mask", "auto")}
    # the source and the edit: two instructions in one batch ([source, edit]), as a P2P batch would be
    both = [[torch.cat([source[0][0], instruction[0][0]]), source[0][1]]]

    def sampler(patched: Any, positive: list, latent: dict, add_noise: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return node["KSamplerAdvanced"].sample(patched, add_noise, 7, args.steps, CFG, "euler", "simple", positive,
                                                       negative, latent, 0, 10000, "disable")[0]["samples"]
        return run

    batch = keeps["mask"][1]
    variants = {"stock": sampler(model, instruction, {"samples": torch.zeros_like(photo)}, "enable"),
                "source branch": sampler(applied, both, batch, "disable"),
                **{f"keep ({mode})": sampler(patched, both, latent, "disable") for mode, (patched, latent, _) in keeps.items()},
                "inversion": lambda: invert()[0]["samples"]}
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    results = {name: common.Result(values) for name, values in times.items()}
    meter, outputs = common.TensorPeak(), {}
    for name, run in variants.items():
        with meter:
            outputs[name] = run()
        results[name].mib = meter.mib
    outside = (keeps["mask"][2].mask[0, 0] == 0).expand(photo.shape[1], 1, SIZE, SIZE)  # beyond the mask's feather
    kept = common.rel_diff(outputs["keep (mask)"][1][outside], photo[0][outside])
    print(f"CPU, {torch.get_num_threads()} threads; tiny Qwen-Image, {SIZE}² latent + a {SIZE}² reference, cfg {CFG}, "
          f"{args.steps} steps; memory: {common.check_meter(common.TensorPeak(), 'cpu')}")
    stock = results["stock"]
    for name, result in results.items():
        print(f"  {name:12s} {result.median * 1000:9.1f} ms  x{result.median / stock.median:.2f}   "
              f"{result.mib:8.1f} MiB  x{result.mib / stock.mib:.2f}")
    print(f"  outside the mask, the edit vs the photo: max |a-b| / max |b| = {kept:.1e}")
    print(f"source_branch_time_ratio={results['source branch'].median / stock.median:.2f} "
          f"keep_mask_time_ratio={results['keep (mask)'].median / stock.median:.2f} "
          f"keep_mask_mem_ratio={results['keep (mask)'].mib / stock.mib:.2f} "
          f"keep_auto_time_ratio={results['keep (auto)'].median / stock.median:.2f} "
          f"inversion_time_ratio={results['inversion'].median / stock.median:.2f}")


if __name__ == "__main__":
    main()
