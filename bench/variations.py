"""Cost of N stochastic-embedding variations in one sampling call.

One process samples, from one shared initial noise and prompt, with the same sampler, steps and cfg:

* ``plain batch``:     an N-item batch of the unchanged prompt (the baseline);
* ``token noise``:     'Stochastic Embeddings' (token noise on one word), N items, one call;
* ``embedding VAE``:   'Stochastic Embeddings' with a null-text embedding VAE (sequence MLP), N
                       items, one call, a new draw per item and step;
* ``separate calls``:  the token-noise variations as N one-item calls (what queueing N prompts costs).

Times are medians of ``--repeats`` interleaved runs after a warm-up. The last line is
``variation_time_ratio=X separate_calls_ratio=Y vae_time_ratio=Z`` (each against the plain batch).
Default: CPU, the tests' tiny SD1.5-shaped model, 128² image, 10 euler steps. ``--full``: a full
SD1.5-shaped UNet with random weights: on CUDA in fp16 at 512², 50 steps; on the CPU in fp32 at
128², 3 steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import common  # first: it prepares the process for torch and puts tests/ on sys.path
import torch

from harness import comfyui  # after common, which puts tests/ on sys.path

PROMPT = "a photo of a cat riding a bicycle on a street"
WORD = "cat"
SCALE = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="full SD1.5-shaped UNet: fp16 at 512², 50 steps on CUDA; fp32 at 128², 3 steps on the CPU")
    parser.add_argument("--count", type=int, default=8, help="variations N (default 8)")
    parser.add_argument("--repeats", type=int, help="timed runs per variant (default 3, --full on the CPU 2)")
    args = parser.parse_args(argv)
    args.device = "cuda" if args.full and torch.cuda.is_available() else "cpu"
    full_cpu = args.full and args.device == "cpu"
    args.steps, args.size = (3, 128) if full_cpu else (50, 512) if args.full else (10, 128)
    args.repeats = args.repeats or (2 if full_cpu else 3)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    nodes = common.init_comfyui(args.device)
    import comfy.sample
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    model, clip, shape = common.sd15(args.full, args.device, common.SEED)
    vary = nodes.NODE_CLASS_MAPPINGS["PromptEditStochasticEmbeddings"]().vary
    positive, negative = comfyui.encode(clip, PROMPT), comfyui.encode(clip, "")
    one = {"samples": torch.zeros(1, 4, args.size // 8, args.size // 8)}
    n = args.count
    vae = EmbeddingVAE(EmbeddingVAEConfig("sequence_mlp", positive[0][0].shape[1], positive[0][0].shape[2]))
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the zero-initialised identity
    null_vae = TrainedEmbeddingVAE(vae.requires_grad_(False), "null-text")

    def run(model: Any, positive: list, latent: dict) -> torch.Tensor:
        noise = comfy.sample.prepare_noise(latent["samples"], common.SEED, latent.get("batch_index"))
        with torch.inference_mode():
            out = comfy.sample.sample(model, noise, args.steps, common.CFG, common.SAMPLER, common.SCHEDULER, positive,
                                      negative, latent["samples"], seed=common.SEED, disable_pbar=True)
        common.synchronize(args.device)
        return out

    _, plain_positive, plain_latent, _ = vary(model, positive, one, "token noise", n, 0, 0.0, "")
    noise_model, noise_positive, noise_latent, _ = vary(model, positive, one, "token noise", n, 0, SCALE, WORD,
                                                        clip=clip, prompt=PROMPT)
    vae_model, vae_positive, vae_latent, _ = vary(model, positive, one, "embedding VAE", n, 0, 1.0, "",
                                                  embedding_vae=null_vae)
    rows = [[[noise_positive[0][0][i : i + 1], noise_positive[0][1]]] for i in range(n)]
    variants: dict[str, Callable[[], Any]] = {
        "plain batch": lambda: run(model, plain_positive, plain_latent),
        "token noise": lambda: run(noise_model, noise_positive, noise_latent),
        "embedding VAE": lambda: run(vae_model, vae_positive, vae_latent),
        "separate calls": lambda: [run(model, row, one) for row in rows],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"device {args.device}; {shape}; N={n}, "
          f"{args.size}² image, {common.SAMPLER} {args.steps} steps; median of {args.repeats} interleaved runs")
    for name, seconds in medians.items():
        print(f"{name:16}{seconds:10.3f} s{seconds / medians['plain batch']:8.2f}x")
    base = medians["plain batch"]
    print(f"variation_time_ratio={medians['token noise'] / base:.2f} "
          f"separate_calls_ratio={medians['separate calls'] / base:.2f} vae_time_ratio={medians['embedding VAE'] / base:.2f}")


if __name__ == "__main__":
    main()
