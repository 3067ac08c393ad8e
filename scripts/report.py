"""One command for the project's numbers: runs the benchmarks and two evaluation sweeps on the
tests' briefly trained tiny SD1.5, and writes a markdown report with plots.

    python scripts/report.py --out report/        # bash scripts/report.sh sets up the venv first

Sweeps: reconstruction error against null-text inner steps (original Adam recipe and the fast
secant method), and fidelity/diversity of token-noise variations of an inverted latent against
the noise scale (PSNR and SSIM to the reconstruction, mean pairwise distance among variations:
LPIPS with --lpips, else mean absolute pixel difference). Plots are drawn with Pillow.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The sweeps run on the tests' models and helpers (tests/harness/); scripts/ is on sys.path already.
sys.path.insert(0, str(ROOT / "tests"))
from arguments import ArgumentParser, checkpoint_file, output_folder, remove_if_empty  # noqa: E402  (scripts/, beside this file)
BENCHMARKS = ("bench/inversion.py", "bench/variations.py", "bench/p2p_overhead.py")
INNER_STEPS = (1, 2, 3, 5, 10)
SCALES = (0.0, 0.1, 0.2, 0.4, 0.8)


def run_benchmarks() -> dict[str, str]:
    """The last line of each benchmark (its machine-readable summary)."""
    lines = {}
    for script in BENCHMARKS:
        result = subprocess.run([sys.executable, str(ROOT / script)], capture_output=True, text=True, check=False)
        output = result.stdout.strip().splitlines()
        lines[script] = output[-1] if result.returncode == 0 and output else f"failed: {result.stderr.strip()[-300:]}"
        print(f"{script}: {lines[script]}", flush=True)
    return lines


def line_plot(path: Path, title: str, x_label: str, series: dict[str, list[tuple[float, float]]]) -> None:
    """A small line chart (one polyline per series, points marked) as PNG."""
    from PIL import Image, ImageDraw

    width, height, margin = 560, 360, 56
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = [p for values in series.values() for p in values]
    x_min, x_max = min(p[0] for p in points), max(p[0] for p in points)
    y_min, y_max = min(p[1] for p in points), max(p[1] for p in points)
    y_min, y_max = (y_min - 1e-9, y_max + 1e-9) if y_min == y_max else (y_min, y_max)
    x_max = x_max if x_max > x_min else x_min + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return (margin + (x - x_min) / (x_max - x_min) * (width - 2 * margin),
                height - margin - (y - y_min) / (y_max - y_min) * (height - 2 * margin))

    draw.rectangle((margin, margin, width - margin, height - margin), outline=(160, 160, 160))
    draw.text((margin, 16), title, fill="black")
    draw.text((width // 2 - 40, height - 24), x_label, fill="black")
    draw.text((4, margin - 12), f"{y_max:.4g}", fill="black")
    draw.text((4, height - margin - 6), f"{y_min:.4g}", fill="black")
    draw.text((margin - 4, height - margin + 6), f"{x_min:g}", fill="black")
    draw.text((width - margin - 16, height - margin + 6), f"{x_max:g}", fill="black")
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    for i, (name, values) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        xy = [at(x, y) for x, y in sorted(values)]
        draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((width - margin - 150, margin + 8 + 14 * i), name, fill=colour)
    image.save(path)


def sweeps(lpips_path: str | None) -> tuple[dict, dict]:
    import torch

    from harness import comfyui, tiny_models, trained_model
    from harness.inversion_runs import invert, node, reconstruct, rel_err

    comfyui.ensure_comfyui()
    from comfyui_prompt_edit.base.image_metrics import psnr, ssim
    from comfyui_prompt_edit.evaluation.lpips import LPIPS
    from comfyui_prompt_edit.evaluation.metrics import mean_pairwise

    model, clip = trained_model.trained_tiny_sd15()
    vae = tiny_models.tiny_vae()
    latents, captions = trained_model.trained_dataset(clip)
    latent, caption = latents[:1].clone(), captions[0]
    steps = 20
    reconstruction: dict[str, list[tuple[float, float]]] = {"null-text (Adam)": [], "null-text fast (secant)": []}
    for inner in INNER_STEPS:
        for label, method in (("null-text (Adam)", "null-text"), ("null-text fast (secant)", "null-text fast")):
            start = time.perf_counter()
            positive, negative, noisy, inversion = invert(model, clip, latent, method, steps=steps, inner_steps=inner, prompt=caption)
            seconds = time.perf_counter() - start
            error = rel_err(reconstruct(model, positive, negative, noisy, inversion, steps=steps), latent)
            reconstruction[label].append((inner, error))
            print(f"{label}, {inner} inner steps: relative error {error:.4f} ({seconds:.1f} s)", flush=True)

    positive, negative, noisy, inversion = invert(model, clip, latent, "null-text fast", steps=steps, prompt=caption)
    patched = node("PromptEditApplyInversion").apply(model, inversion)[0]
    distance = LPIPS.load(lpips_path) if lpips_path else (lambda a, b: (a - b).abs().flatten(1).mean(1))
    with torch.inference_mode():
        source = vae.decode(reconstruct(model, positive, negative, noisy, inversion, steps=steps))
    variation: dict[str, list[tuple[float, float]]] = {"PSNR to the reconstruction (dB)": [], "SSIM": [], "diversity": []}
    for scale in SCALES:
        varied_model, varied_positive, varied_latent, _ = node("PromptEditStochasticEmbeddings").vary(
            patched, positive, noisy, "token noise", 4, 0, scale, "")
        with torch.inference_mode():
            out = node("KSamplerAdvanced").sample(varied_model, "disable", 0, steps, inversion.guidance, "euler",
                                                  "ddim_uniform", varied_positive, negative, varied_latent, 0, 10000,
                                                  "disable")[0]["samples"]
            images = vae.decode(out)
        reference = source.expand_as(images)
        variation["PSNR to the reconstruction (dB)"].append((scale, float(psnr(images, reference).clamp(max=100).mean())))
        variation["SSIM"].append((scale, float(ssim(images, reference).mean())))
        variation["diversity"].append((scale, mean_pairwise(distance, images)))
        print(f"token noise {scale}: " + ", ".join(f"{k} {v[-1][1]:.4f}" for k, v in variation.items()), flush=True)
    return reconstruction, variation


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="report", help="folder for report.md and the plots (default report/)")
    parser.add_argument("--lpips", help="VGG-16 (+ LPIPS heads) weights: diversity as LPIPS")
    parser.add_argument("--skip-benchmarks", action="store_true")
    parser.add_argument("--check", action="store_true", help="only check the arguments and exit (scripts/report.sh "
                                                             "runs it before any set-up)")
    args = parser.parse_args(argv)
    # Checked before the benchmarks and the sweeps (many minutes) start.
    lpips = str(checkpoint_file("--lpips", args.lpips, (".safetensors",))) if args.lpips else None
    out, made = output_folder("--out", args.out)
    if args.check:
        remove_if_empty(made)
        return
    benchmarks = {} if args.skip_benchmarks else run_benchmarks()
    reconstruction, variation = sweeps(lpips)
    line_plot(out / "reconstruction_vs_inner_steps.png", "relative latent error after reconstruction (cfg 7.5)",
              "inner steps per sampling step", reconstruction)
    for name, values in variation.items():
        slug = name.split(" ")[0].lower()
        line_plot(out / f"{slug}_vs_noise_scale.png", f"token-noise variations: {name}", "noise scale", {name: values})
    lines = ["# Prompt Edit report", "", f"Generated {time.strftime('%Y-%m-%d %H:%M')} on the CPU with the tests' tiny models.", ""]
    if benchmarks:
        lines += ["## Benchmarks (last lines)", "", "| benchmark | result |", "|---|---|"]
        lines += [f"| `{script}` | `{line}` |" for script, line in benchmarks.items()] + [""]
    lines += ["## Reconstruction against inner steps", "", "| inner steps | " + " | ".join(reconstruction) + " |",
              "|---" * (len(reconstruction) + 1) + "|"]
    for i, inner in enumerate(INNER_STEPS):
        lines.append(f"| {inner} | " + " | ".join(f"{values[i][1]:.4f}" for values in reconstruction.values()) + " |")
    lines += ["", "![](reconstruction_vs_inner_steps.png)", "", "## Token-noise variations against the noise scale", "",
              "| scale | " + " | ".join(variation) + " |", "|---" * (len(variation) + 1) + "|"]
    for i, scale in enumerate(SCALES):
        lines.append(f"| {scale:g} | " + " | ".join(f"{values[i][1]:.4f}" for values in variation.values()) + " |")
    lines += [""] + [f"![]({name.split(' ')[0].lower()}_vs_noise_scale.png)" for name in variation]
    diversity = "LPIPS" if args.lpips else "mean absolute pixel difference (no --lpips given)"
    lines += ["", f"Diversity: mean pairwise {diversity} among 4 variations."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'report.md'}")


if __name__ == "__main__":
    main()
