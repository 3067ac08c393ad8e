"""Cost of the Prompt-to-Prompt edit on Wan 2.1 at its 1.3B block width over plain sampling of the same batch.

One process samples the same 2-item batch (a source prompt and one edited prompt, one shared
initial noise, euler, the 'simple' schedule, real CFG) with:

* ``plain``:         the unpatched model;
* ``replace``:       'P2P Attention Control', word replace on the cross-attention over the first
                     80 % of the steps, self-attention injection over the first 40 % (the value
                     trick: ``attn(q_src, k_src, v_edit)`` through the fused kernel, no video × video
                     map), word maps recorded in every block (local blend, P2P Attention Maps);
* ``replace, no maps``: the same without recording the maps (what the maps cost);
* ``replace, 512 maps``: the maps as they were first recorded on Wan, as on a UNet: every head's
                     ``[video tokens × 512]`` probabilities formed at once, all 512 columns stored per
                     step (now: one head at a time, the prompts' word and end columns only).

``--maps-only``: no sampling; the peak tensor memory of one block's map record at a 480p latent
(5 latent frames of 60x104, 7800 video tokens) both ways, plain torch (last line
``wan_record_512_mib=… wan_record_mib=…``).

Time is the median of ``--repeats`` interleaved runs after one warm-up run per variant; memory is
the peak of torch's tensor allocations in one extra run per variant (bench/common.py's TensorPeak).

The model: Wan 2.1 1.3B's block (dim 1536, 12 heads of 128, ffn 8960, umT5 text 4096 wide with 512
columns, patch (1, 2, 2), 16 latent channels) built through ComfyUI's ``WAN21_T2V`` config with
``--blocks`` blocks (the real model has 30) and random weights, fp32 on the CPU. The context is
random umT5-like columns (the words, then zero pad columns up to 512) with a hand-made edit (the
umT5 encoder is not built). Every cost here is per block and linear in the video tokens except the
self-attention's time, so the ratios at a smaller latent carry over to 480p (see --frames/--height/--width).

The last line is machine readable:
``wan_replace_time_ratio=… wan_replace_mem_ratio=… wan_no_maps_time_ratio=… wan_no_maps_mem_ratio=…
wan_512_maps_time_ratio=… wan_512_maps_mem_ratio=… wan_maps_mib=… wan_512_maps_mib=…`` (…_mib: the map
store's size after a run).
"""

from __future__ import annotations

import argparse
from typing import Any

import common  # first: it prepares the process for torch and puts tests/ on sys.path
import torch

from harness import tiny_models  # after common, which puts tests/ on sys.path

DIM, HEADS, FFN, TEXT_DIM, COLUMNS, CHANNELS = 1536, 12, 8960, 4096, 512, 16
SOURCE, EDIT = "a video of a cat riding a bicycle on a street", "a video of a dog riding a bicycle on a street"
CFG = 5.0  # Wan's usual guidance; real CFG: the unconditional batch runs too


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=2, help="Wan blocks (default 2; the 1.3B model has 30)")
    parser.add_argument("--frames", type=int, default=2, help="latent frames (default 2 = 5 video frames)")
    parser.add_argument("--height", type=int, default=30, help="latent rows (default 30 = 240 px)")
    parser.add_argument("--width", type=int, default=52, help="latent columns (default 52 = 416 px)")
    parser.add_argument("--steps", type=int, default=4, help="euler steps (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant (default 2)")
    parser.add_argument("--plain-and-replace", action="store_true",
                        help="only the plain and replace variants (at 480p each run takes minutes on the CPU)")
    parser.add_argument("--maps-only", action="store_true",
                        help="only the map record of one cross-attention call at 480p (no sampling)")
    return parser.parse_args(argv)


def wan_1_3b_blocks(blocks: int, seed: int = 0) -> Any:
    """Wan 2.1 T2V 1.3B's width with ``blocks`` blocks, random weights, fp32."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=COLUMNS, in_dim=CHANNELS,
                  out_dim=CHANNELS, dim=DIM, ffn_dim=FFN, freq_dim=256, text_dim=TEXT_DIM, num_heads=HEADS,
                  num_layers=blocks, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
    model_config = comfy.supported_models.WAN21_T2V(config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    tiny_models.fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def umt5_like(texts: tuple[str, ...], seed: int) -> torch.Tensor:
    """[len(texts), 512, 4096]: one random column per word (a word shared by the prompts gets the
    same column), then the end column, then zero pad columns, as umT5 zeroes its pad outputs."""
    generator = torch.Generator().manual_seed(seed)
    vocabulary: dict[str, torch.Tensor] = {}
    context = torch.zeros(len(texts), COLUMNS, TEXT_DIM)
    for i, text in enumerate(texts):
        for j, word in enumerate([*text.split(), "</s>"]):
            if word not in vocabulary:
                vocabulary[word] = torch.randn(TEXT_DIM, generator=generator)
            context[i, j] = vocabulary[word]
    return context


def workload(args: argparse.Namespace) -> dict[str, Any]:
    from mmdit_overhead import hand_made_edit  # the same hand-made P2P edit (word columns, end, pad)

    shape = (CHANNELS, args.frames, args.height, args.width)
    samples = torch.zeros(2, *shape)
    noise = torch.randn(1, *shape, generator=torch.Generator().manual_seed(common.SEED)).expand_as(samples)
    return {"positive": [[umt5_like((SOURCE, EDIT), seed=1), {}]], "negative": [[umt5_like(("",), seed=2), {}]],
            "latent": samples, "noise": noise.contiguous(), "steps": args.steps,
            "edit": hand_made_edit("wan", COLUMNS, SOURCE, EDIT)}


def sample(model: Any, work: dict[str, Any]) -> torch.Tensor:
    import comfy.sample

    with torch.inference_mode():
        return comfy.sample.sample(model, work["noise"], work["steps"], CFG, "euler", "simple", work["positive"],
                                   work["negative"], work["latent"], seed=common.SEED, disable_pbar=True)



def store_mib(handle: Any) -> float:
    store = handle.store
    tensors = [*store.per_step.values(), *([store.running] if store.running is not None else [])]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def record_peaks(frames: int = 5, height: int = 60, width: int = 104, columns: int = 12) -> tuple[float, float]:
    """Peak tensor MiB of one block's map record at a 480p latent (default: 5 latent frames of 60x104 =
    17 video frames of 480x832, 7800 video tokens) for the source and the edit: every head's 512
    columns at once (the UNets' way) vs one head at a time, ``columns`` kept (the 12 of this edit)."""
    from comfyui_prompt_edit.attention.edited_attention import attention_probs, column_probs, folded_probs

    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, frames * (height // 2) * (width // 2), DIM, generator=generator)
    k = torch.randn(2, COLUMNS, DIM, generator=generator)
    peaks = []
    for record in (lambda: folded_probs(attention_probs(q, k, HEADS), COLUMNS).mean(1),
                   lambda: column_probs(q, k, HEADS, COLUMNS, tuple(range(columns)))):
        with common.TensorPeak() as meter:
            kept = record()
        peaks.append(meter.mib)
        del kept
    return peaks[0], peaks[1]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.steps < 3 and not args.maps_only:  # P2P's windows count whole steps: int(0.4 * steps)
        raise SystemExit("wan_overhead.py: --steps must be at least 3, or the self-attention window (0.4) covers no step "
                         "and the edit (cross-attention window 0.8) at most one")
    nodes = common.init_comfyui("cpu")
    if args.maps_only:
        wide, bounded = record_peaks()
        print(f"one block's map record, 480p (5 latent frames of 60x104, 7800 video tokens), source + edit: "
              f"{wide:.1f} MiB with every head's 512 columns, {bounded:.1f} MiB one head at a time, 12 columns kept")
        print(f"wan_record_512_mib={wide:.1f} wan_record_mib={bounded:.1f}")
        return
    control = nodes.NODE_CLASS_MAPPINGS["PromptEditP2PAttentionControl"]()
    model, work = wan_1_3b_blocks(args.blocks), workload(args)
    tokens = args.frames * (args.height // 2) * (args.width // 2)
    print(f"CPU, {torch.get_num_threads()} threads; Wan 2.1 1.3B width (dim {DIM}, {HEADS} heads, ffn {FFN}, "
          f"text {COLUMNS}x{TEXT_DIM}), {args.blocks} blocks, fp32; latent 16x{args.frames}x{args.height}x{args.width} "
          f"({(args.frames - 1) * 4 + 1} frames of {args.height * 8}x{args.width * 8} px, {tokens} video tokens); "
          f"batch 1 source + 1 edit, cfg {CFG}, euler/simple, {args.steps} steps; "
          f"memory: {common.check_meter(common.TensorPeak(), 'cpu')}")
    models: dict[str, Any] = {"plain": model}
    models["replace"], handle = control.apply(model, work["edit"], "replace", 0.0, 0.8, 0.4, "coarse")
    if not args.plain_and_replace:
        models["replace, no maps"], quiet = control.apply(model, work["edit"], "replace", 0.0, 0.8, 0.4, "coarse")
        quiet._record = lambda *a, **k: None  # the maps are never recorded (nothing reads them here)
        models["replace, 512 maps"], wide = control.apply(model, work["edit"], "replace", 0.0, 0.8, 0.4, "coarse")
        wide.store.columns = None  # the UNets' way: every column, all heads at once
    results, outputs = common.measure_interleaved(sample, models, work, args.repeats)
    plain, maps = results["plain"], store_mib(handle)
    print(f"vs plain: the source's and the edit's max |a-b| / max |b|; map store after a run: {maps:.2f} MiB "
          f"({len(handle.store.columns)} columns)"
          + ("" if args.plain_and_replace else f", {store_mib(wide):.1f} MiB with all 512"))
    for name, result in results.items():
        source, edit = (common.rel_diff(outputs[name][rows], outputs["plain"][rows]) for rows in (slice(0, 1), slice(1, None)))
        print(f"  {name:18s} {result.median:8.2f} s  x{result.median / plain.median:.2f}   "
              f"{result.mib:8.1f} MiB  x{result.mib / plain.mib:.2f}   source {source:.1e}, edit {edit:.1e}")
    line = (f"wan_replace_time_ratio={results['replace'].median / plain.median:.2f} "
            f"wan_replace_mem_ratio={results['replace'].mib / plain.mib:.2f} wan_maps_mib={maps:.2f}")
    if args.plain_and_replace:
        print(line)
        return
    print(f"{line} "
          f"wan_no_maps_time_ratio={results['replace, no maps'].median / plain.median:.2f} "
          f"wan_no_maps_mem_ratio={results['replace, no maps'].mib / plain.mib:.2f} "
          f"wan_512_maps_time_ratio={results['replace, 512 maps'].median / plain.median:.2f} "
          f"wan_512_maps_mem_ratio={results['replace, 512 maps'].mib / plain.mib:.2f} "
          f"wan_512_maps_mib={store_mib(wide):.1f}")


if __name__ == "__main__":
    main()
