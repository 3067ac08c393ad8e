"""Wall time and reconstruction quality of the inversions, measured in one process.

For the same latent and prompt (an in-distribution latent of the harness's briefly trained tiny
SD1.5 model, whose DDIM trajectory is well behaved, unlike a random-weight model's):

* ``null-text (original)``: the original recipe — Adam, up to 10 inner steps per step, early stop;
* ``null-text fast`` (ours): started from the source prompt's embedding, 1 steepest-descent step
  with a secant line search per step (inversion/null_text.py; the conditional ε shares the
  step's first model call), skipped once a step is reconstructed, and none at steps 1, 4, 7, …
  (never the last), which keep the previous step's embedding; also with 2 updates;
* ``direct``: DDIM inversion only; Apply Inversion puts the source back on the pivots at every
  sampler step (inversion/direct.py), exact at any cfg;
* ``negative-prompt``: no optimisation (the fast inversion);
* ``ddim``: DDIM inversion alone, sampled at cfg 7.5.

Each is inverted through the 'Invert Image' node and reconstructed by the stock KSamplerAdvanced
with 'Apply Inversion'. PSNR is computed on latents (peak = the source latent's value range) and
on pixels (both latents decoded by the same VAE). Times are medians of ``--repeats`` runs, the
methods interleaved (a, b, c, …, a, b, c, …) so that drift of a shared machine hits all alike.

Last line: ``nti_speedup=X nti_latent_psnr_db=A orig_latent_psnr_db=B direct_speedup=Y
direct_latent_err=Z ddim_cfg_psnr_db=C`` (X, Y = the original recipe's time over null-text fast's
and direct's; A, B = their latent PSNRs; Z = direct's relative latent error; C = DDIM at cfg 7.5,
pixels).
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # first: it prepares the process for torch and puts tests/ on sys.path
import torch

from harness import comfyui, tiny_models, trained_model  # after common, which puts tests/ on sys.path

GUIDANCE, SCHEDULER = 7.5, "ddim_uniform"
# (row label, method, inner steps; 0 = the method's default)
METHODS = (("null-text", "null-text", 0), ("null-text fast", "null-text fast", 0),
           ("null-text fast, 2 updates", "null-text fast", 2), ("direct", "direct", 0),
           ("negative-prompt", "negative-prompt", 0), ("ddim", "ddim", 0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (default 3)")
    parser.add_argument("--item", type=int, default=0, help="which training latent to invert")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    nodes = common.init_comfyui("cpu")
    from comfyui_prompt_edit.base.image_metrics import psnr

    m = nodes.NODE_CLASS_MAPPINGS
    model, clip = trained_model.trained_tiny_sd15()
    vae = tiny_models.tiny_vae()
    latents, captions = trained_model.trained_dataset(clip)
    latent, caption = latents[args.item : args.item + 1].clone(), captions[args.item]
    positive, negative = comfyui.encode(clip, caption), comfyui.encode(clip, "")
    with torch.inference_mode():
        source_pixels = vae.decode(latent)

    times = {label: [] for label, _, _ in METHODS}
    results = {}
    for _ in range(args.repeats):
        for label, method, inner_steps in METHODS:
            start = time.perf_counter()
            with torch.inference_mode():
                results[label] = m["PromptEditInvertImage"]().invert(
                    model, positive, negative, {"samples": latent}, method, SCHEDULER, args.steps, GUIDANCE,
                    inner_steps, 1e-5)
            times[label].append(time.perf_counter() - start)
    rows = {}
    for label, _, _ in METHODS:
        noisy, inversion = results[label]
        with torch.inference_mode():
            patched = m["PromptEditApplyInversion"]().apply(model, inversion)[0]
            out = m["KSamplerAdvanced"]().sample(patched, "disable", 0, args.steps, GUIDANCE, "euler", SCHEDULER,
                                                 positive, negative, noisy, 0, 10000, "disable")[0]["samples"]
            pixels = vae.decode(out)
        latent_db = float(psnr(out, latent, peak=float(latent.max() - latent.min())).mean())
        error = float((out - latent).norm() / latent.norm())
        rows[label] = (statistics.median(times[label]), latent_db, float(psnr(pixels, source_pixels).mean()), error)

    print(f"trained tiny SD1.5, {args.steps} steps ({SCHEDULER}), cfg {GUIDANCE}, caption {caption!r}; "
          f"median of {args.repeats} runs")
    print(f"{'method':26}{'seconds':>10}{'latent PSNR':>14}{'pixel PSNR':>13}{'latent error':>15}")
    for method, (seconds, lat, pix, err) in rows.items():
        print(f"{method:26}{seconds:10.3f}{lat:14.2f}{pix:13.2f}{err:15.2e}")
    original = rows["null-text"][0]
    print(f"nti_speedup={original / rows['null-text fast'][0]:.2f} nti_latent_psnr_db={rows['null-text fast'][1]:.2f} "
          f"orig_latent_psnr_db={rows['null-text'][1]:.2f} direct_speedup={original / rows['direct'][0]:.2f} "
          f"direct_latent_err={rows['direct'][3]:.2e} ddim_cfg_psnr_db={rows['ddim'][2]:.2f}")


if __name__ == "__main__":
    main()
