"""A briefly trained tiny SD1.5: tiny_models.tiny_sd15_model trained into a real (if small)
denoiser on a synthetic, caption-conditioned latent dataset, for the tests that need
reconstructions to mean something (inversion quality, variations of an inverted latent). The
training captions and data (trained_dataset), the training run, and its cache in the user cache,
keyed by recipe and seed."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.comfyui import encode, ensure_comfyui, is_initialised
from harness.model_files import safetensors_metadata, write_safetensors
from harness.pack import cache_dir
from harness.tiny_models import tiny_sd1_clip, tiny_sd15_model

if TYPE_CHECKING:  # ComfyUI is importable only after ensure_comfyui()
    import comfy.model_patcher
    import comfy.sd


# A briefly trained tiny SD1.5: a real (if small) denoiser
#
# Random-weight UNets are not denoisers, so reconstruction tests (DDIM inversion followed by
# sampling) are meaningless on them (relative error ~3). trained_tiny_sd15() trains the UNet of
# tiny_sd15_model on a synthetic, caption-conditioned latent dataset for about a minute on two CPU
# cores, once per recipe, and caches the weights.
#
# Why the dataset looks as it does (measured with 20-step ddim_uniform inversion + euler at cfg 1):
# - Each caption has two discrete variants (its shape in the upper left or the lower right) that are
#   far apart (relative distance ~0.6). Deterministic inversion maps well-separated modes back onto
#   themselves exactly, so a reconstruction error well below that distance proves that the
#   inverted noise carries the sample, not just the caption.
# - Continuous jitter is tiny (~1 %): a 20-step first-order inversion loses 30-80 % of any
#   Gaussian-like variation (the larger, the more of the trajectory bends), which would put a floor
#   under the reconstruction error.
# - Latents have rms 2 in model space (real SD1.5 latents: ~1). The UNet's ε error at high σ is
#   multiplied by σ in the denoised estimate, so relative errors shrink as the data grow
#   (rms 0.55 / 1.0 / 1.5 / 2.0 gave mean errors 0.08 / 0.045 / 0.040 / 0.031). Part of that ε
#   error is structural: at 8x8 the output GroupNorm (one channel per group at 32 channels)
#   normalises each channel over only 64 pixels, which hides the noise's per-channel mean.

TRAINED_CAPTIONS = (
    "a red square",
    "a blue circle",
    "a green stripe",
    "a yellow cross",
    "a white ring",
    "a purple triangle",
)
"""The training captions, in class order (trained_dataset lists latents in this order)."""
TRAINED_LATENT_SIZE = 8
"""Height and width of the training latents (the model accepts other sizes, it was not trained on them)."""
TRAINED_CACHE_NAME = "trained_tiny_sd15_v1.safetensors"

# Unit latent directions for the colours: chosen so that ComfyUI's SD1.5 latent->RGB preview shows
# roughly that colour (least-squares inverse of its preview matrix, normalised). Blue = -yellow and
# green = -purple, as their RGB values are opposite.
_TRAINED_COLOURS = {
    "red": (0.29, -0.30, -0.91, 0.04),
    "blue": (-0.10, -0.80, 0.21, -0.56),
    "green": (-0.30, 0.58, 0.55, 0.52),
    "yellow": (0.10, 0.80, -0.21, 0.56),
    "white": (0.53, 0.75, -0.18, -0.36),
    "purple": (0.30, -0.58, -0.55, -0.52),
}
_TRAINED_RMS = 2.0  # rms of a clean centred pattern, model space (LATENT space: / 0.18215)
_TRAINED_RADIUS = 1.8  # shape size in latent pixels
_TRAINED_EDGE = 3.0  # sigmoid edge steepness per pixel: smooth shapes are easier to learn
_TRAINED_MODE_SHIFT = 1.0  # the two variants are shifted by -+(1, 1) pixels
_TRAINED_JITTER = {"shift": 0.02, "size": 0.01, "colour": 0.01, "pixel": 0.003}
_TRAINED_STEPS = 160
_TRAINED_BATCH = 32
_TRAINED_LR = 3e-3
_TRAINED_WARMUP = 20
_TRAINED_UNCOND_RATE = 0.1  # empty-prompt context this often, so that CFG has an uncond to use
_TRAINED_LOG_SIGMA_RATE = 0.5  # this share of σ log-uniform over the table, the rest uniform in t
_TRAINED_THREADS = 2
_TRAINED_RECIPE = (
    "comfyui_prompt_edit trained_tiny_sd15 v1: tiny_sd15_model + tiny_sd1_clip(0), "
    f"{len(TRAINED_CAPTIONS)} captions x 2 modes, {TRAINED_LATENT_SIZE}px, rms {_TRAINED_RMS}, "
    f"jitter {sorted(_TRAINED_JITTER.items())}, AdamW lr {_TRAINED_LR} wd 0.01 warmup {_TRAINED_WARMUP} cosine, "
    f"{_TRAINED_STEPS} x {_TRAINED_BATCH}, uncond {_TRAINED_UNCOND_RATE}, log-sigma {_TRAINED_LOG_SIGMA_RATE}"
)
"""Stored in the cached file's metadata (with the seed); change it with the recipe to retrain."""


def _shape_masks(shapes: list[str], u: torch.Tensor, v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Soft [0, 1] masks [n, H, W] of each sample's shape, centred at u = v = 0 (pixels)."""

    def inside(distance: torch.Tensor) -> torch.Tensor:  # soft "distance > 0"
        return torch.sigmoid(_TRAINED_EDGE * distance)

    r = radius[:, None, None]
    masks = []
    for i, shape in enumerate(shapes):
        ui, vi, ri = u[i], v[i], r[i]
        if shape == "square":
            mask = inside(ri - ui.abs()) * inside(ri - vi.abs())
        elif shape == "circle":
            mask = inside(ri - ui.hypot(vi))
        elif shape == "stripe":
            mask = inside(0.5 * ri - vi.abs())
        elif shape == "cross":
            bars = torch.maximum(inside(0.45 * ri - ui.abs()), inside(0.45 * ri - vi.abs()))
            mask = bars * inside(1.6 * ri - ui.abs()) * inside(1.6 * ri - vi.abs())
        elif shape == "ring":
            mask = inside(0.45 * ri - (ui.hypot(vi) - ri).abs())
        elif shape == "triangle":
            mask = inside(vi + ri) * inside(ri - vi - 2 * ui.abs())
        else:
            raise ValueError(f"unknown shape {shape!r}")
        masks.append(mask)
    return torch.stack(masks)


def _trained_colour_vectors() -> torch.Tensor:
    """[classes, 4] colour vectors, scaled so that every clean centred pattern has rms _TRAINED_RMS
    (equal norms: no caption is learnt better just because its pattern is larger)."""
    grid = torch.arange(TRAINED_LATENT_SIZE, dtype=torch.float32) - (TRAINED_LATENT_SIZE - 1) / 2
    count = len(TRAINED_CAPTIONS)
    u = grid[None, None, :].expand(count, TRAINED_LATENT_SIZE, TRAINED_LATENT_SIZE)
    v = grid[None, :, None].expand(count, TRAINED_LATENT_SIZE, TRAINED_LATENT_SIZE)
    shapes = [caption.split()[-1] for caption in TRAINED_CAPTIONS]
    masks = _shape_masks(shapes, u, v, torch.full((count,), _TRAINED_RADIUS))
    colours = torch.tensor([_TRAINED_COLOURS[caption.split()[1]] for caption in TRAINED_CAPTIONS])
    colours = colours / colours.norm(dim=1, keepdim=True)
    target_norm = _TRAINED_RMS * (4 * TRAINED_LATENT_SIZE**2) ** 0.5
    return colours * (target_norm / masks.flatten(1).norm(dim=1))[:, None]


def _trained_latents(labels: torch.Tensor, modes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Model-space latents [n, 4, S, S]: caption `labels[i]`'s shape in variant `modes[i]` (0: upper
    left, 1: lower right) on a near-zero background, with small random jitter from `generator`."""
    n, size = len(labels), TRAINED_LATENT_SIZE
    jitter = _TRAINED_JITTER

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1)
        return torch.rand(shape, generator=generator) * 2 - 1

    shift = uniform(n, 2) * jitter["shift"] + (modes.float() * 2 - 1)[:, None] * _TRAINED_MODE_SHIFT
    radius = _TRAINED_RADIUS * (1 + uniform(n) * jitter["size"])
    colour = _trained_colour_vectors()[labels] + jitter["colour"] * torch.randn(n, 4, generator=generator)
    background = jitter["colour"] * torch.randn(n, 4, generator=generator)
    pixel_noise = jitter["pixel"] * torch.randn(n, 4, size, size, generator=generator)
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    v = (grid[None, :, None] - shift[:, 0, None, None]).expand(n, size, size)
    u = (grid[None, None, :] - shift[:, 1, None, None]).expand(n, size, size)
    shapes = [TRAINED_CAPTIONS[int(label)].split()[-1] for label in labels]
    masks = _shape_masks(shapes, u, v, radius)[:, None]
    return background[:, :, None, None] + (colour - background)[:, :, None, None] * masks + pixel_noise


def trained_dataset(clip: Any = None, per_caption: int = 2, seed: int = 1) -> tuple[torch.Tensor, list[str]]:
    """In-distribution latents of trained_tiny_sd15 and their captions: (latents [n, 4, 8, 8],
    captions), caption-major in TRAINED_CAPTIONS order, variants alternating (0, 1, 0, ...), so the
    default gives both variants of every caption and `latents[0]` is "a red square", upper left.

    The latents are in LATENT space, i.e. what a LATENT dict's "samples" holds (what VAEEncode
    would give): feed them to nodes as {"samples": latents}; `model.model.process_latent_in(...)`
    gives the model-space values that apply_model sees. `clip` is not used: the data do not depend
    on it (accepted so that calls can read `trained_dataset(clip)`). `seed` picks the jitter; the
    training run uses its own stream.
    """
    count = len(TRAINED_CAPTIONS)
    labels = torch.arange(count).repeat_interleave(per_caption)
    modes = torch.arange(per_caption).remainder(2).repeat(count)
    latents = _trained_latents(labels, modes, torch.Generator().manual_seed(seed))
    captions = [TRAINED_CAPTIONS[int(label)] for label in labels]
    return latents / _sd15_scale_factor(), captions


def _sd15_scale_factor() -> float:
    """SD1.5's latent scale (process_latent_in multiplies by it), read from ComfyUI when it is there."""
    if is_initialised():
        import comfy.latent_formats

        return float(comfy.latent_formats.SD15().scale_factor)
    return 0.18215


def trained_tiny_sd15_path(seed: int = 0) -> Path:
    """Where trained_tiny_sd15(seed) caches its UNet weights."""
    if seed == 0:
        return cache_dir() / TRAINED_CACHE_NAME
    return cache_dir() / TRAINED_CACHE_NAME.replace(".safetensors", f"_seed{seed}.safetensors")


def trained_tiny_sd15_info(seed: int = 0) -> dict[str, Any] | None:
    """What the cached training run recorded (recipe, seconds, loss by tenth of the run, threads),
    or None if there is no valid cache for this recipe and seed."""
    metadata = safetensors_metadata(trained_tiny_sd15_path(seed))
    if metadata is None or metadata.get("recipe") != f"{_TRAINED_RECIPE} seed={seed}":
        return None
    return {
        "recipe": metadata["recipe"],
        "seconds": float(metadata["seconds"]),
        "loss_by_tenth": json.loads(metadata["loss_by_tenth"]),
        "threads": int(metadata["threads"]),
    }


def trained_tiny_sd15(seed: int = 0) -> tuple[comfy.model_patcher.ModelPatcher, comfy.sd.CLIP]:
    """(ModelPatcher, CLIP): tiny_sd15_model(seed) trained briefly on trained_dataset's distribution,
    and the frozen tiny_sd1_clip() (seed 0) whose encodings it was trained on.

    Everything else treats it as the plain tiny SD1.5 (SD15 class, EPS, context 32); only its
    weights differ. The first call for a recipe and seed trains (about a minute on 2 CPU threads,
    deterministic given the seed on one machine) and writes trained_tiny_sd15_path(seed)
    atomically; later calls load that file (well under a second). The model is built outside
    inference mode, so it holds normal tensors even when called inside one.
    """
    ensure_comfyui()
    import comfy.utils

    path = trained_tiny_sd15_path(seed)
    recipe = f"{_TRAINED_RECIPE} seed={seed}"
    with torch.inference_mode(False):
        model = tiny_sd15_model(seed)
        clip = tiny_sd1_clip()
        net = model.model.diffusion_model
        if trained_tiny_sd15_info(seed) is not None:
            net.load_state_dict(comfy.utils.load_torch_file(str(path)))
            return model, clip
        logging.info("training trained_tiny_sd15(seed=%d) once; cached as %s", seed, path)
        seconds, losses = _train_tiny_sd15(model, clip, seed)
        tenth = len(losses) // 10
        loss_by_tenth = [round(sum(losses[i : i + tenth]) / tenth, 4) for i in range(0, tenth * 10, tenth)]
        metadata = {
            "recipe": recipe,
            "seconds": f"{seconds:.1f}",
            "loss_by_tenth": json.dumps(loss_by_tenth),
            "threads": str(_TRAINED_THREADS),
        }
        state_dict = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(state_dict, path, metadata)
    return model, clip


def _caption_context(clip: comfy.sd.CLIP, text: str) -> torch.Tensor:
    """The cross-attention context [1, 77, 32] that CLIPTextEncode gives for `text`."""
    with torch.no_grad():
        return encode(clip, text)[0][0].detach().clone()


def _train_tiny_sd15(
    model: comfy.model_patcher.ModelPatcher, clip: comfy.sd.CLIP, seed: int
) -> tuple[float, list[float]]:
    """Train model's UNet in place with the ε objective in ComfyUI's parameterisation; the CLIP
    stays frozen (as in SD). Returns (seconds, loss per step).

    Per step: x0 from _trained_latents (captions cycled evenly), σ from the model_sampling table
    (half uniform in t as in SD, half log-uniform in σ: the inversion's last, big step from
    σ(t=1) = 0.04 to σ(t=51) = 0.23 needs the low-σ end), x = x0 + σ·ε, D = apply_model(x, σ,
    context), loss = mse((x - D)/σ, ε). The empty-prompt context replaces the caption 10 % of the
    time (CFG dropout). The output conv starts at zero, so the first prediction is ε = 0 (loss 1)
    instead of random noise. Needs grad mode, hence inference_mode(False): nodes run under inference mode.
    """
    net = model.model.diffusion_model
    sigmas = model.get_model_object("model_sampling").sigmas.detach().clone()  # ascending, t = 0..999
    log_low, log_high = sigmas[0].log(), sigmas[-1].log()
    contexts = torch.cat([_caption_context(clip, caption) for caption in TRAINED_CAPTIONS])
    empty = _caption_context(clip, "")
    generator = torch.Generator().manual_seed(seed)
    batch, count = _TRAINED_BATCH, len(TRAINED_CAPTIONS)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(_TRAINED_THREADS)
    # ComfyUI builds diffusion models with requires_grad=False since 0.31: train with it on,
    # then put each parameter's flag back as the host left it.
    frozen = [p for p in net.parameters() if not p.requires_grad]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            net.requires_grad_(True)
            with torch.no_grad():
                net.out[-1].weight.zero_()
                net.out[-1].bias.zero_()
            optimizer = torch.optim.AdamW(net.parameters(), lr=_TRAINED_LR, weight_decay=0.01)

            def lr_factor(step: int) -> float:  # linear warmup, cosine decay to 5 %
                warm = min(1.0, (step + 1) / _TRAINED_WARMUP)
                return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / _TRAINED_STEPS)))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
            losses = []
            start = time.perf_counter()
            for step in range(_TRAINED_STEPS):
                labels = (torch.arange(batch) + step) % count
                modes = torch.randint(0, 2, (batch,), generator=generator)
                x0 = _trained_latents(labels, modes, generator)
                uncond = torch.rand(batch, generator=generator) < _TRAINED_UNCOND_RATE
                context = torch.where(uncond[:, None, None], empty, contexts[labels])
                t = torch.randint(0, len(sigmas), (batch,), generator=generator)
                log_sigma = log_low + (log_high - log_low) * torch.rand(batch, generator=generator)
                t_log = torch.searchsorted(sigmas, log_sigma.exp()).clamp(max=len(sigmas) - 1)
                use_log = torch.rand(batch, generator=generator) < _TRAINED_LOG_SIGMA_RATE
                sigma = sigmas[torch.where(use_log, t_log, t)]
                noise = torch.randn(x0.shape, generator=generator)
                s = sigma[:, None, None, None]
                x = x0 + s * noise
                denoised = model.model.apply_model(x, sigma, c_crossattn=context)
                loss = torch.nn.functional.mse_loss((x - denoised) / s, noise)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            seconds = time.perf_counter() - start
        net.zero_grad(set_to_none=True)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(False)
        torch.set_num_threads(previous_threads)
    return seconds, losses

