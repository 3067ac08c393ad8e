"""Train an embedding VAE from the command line, with the same code as the 'Train Embedding VAE'
nodes, against a local ComfyUI install and checkpoint.

Null-text VAE (several images of one class, same size, train one VAE):

    python scripts/train_embedding_vae.py --checkpoint models/checkpoints/v1-5.safetensors \\
        --prompt "a photo of a cat" --images cat1.png cat2.png --out cat_null_text.safetensors

Conditional VAE of an edit of one photo (the photo is inverted with 'null-text fast' first; the
CLIP vision model must match the checkpoint's text encoder, e.g. ViT-L/14 for SD1.x):

    python scripts/train_embedding_vae.py --checkpoint ... --images cat.png --prompt "a photo of a cat" \\
        --edit-prompt "a photo of a dog" --clip-vision models/clip_vision/vit-l-14.safetensors --out dog.safetensors
 ComfyUI is found through --comfyui,
$COMFYUI_PATH, the ComfyUI holding this pack (custom_nodes/), or ~/ComfyUI. Copy the result into
ComfyUI's models/embedding_vae/ to use it with 'Load Embedding VAE'.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

from arguments import ArgumentParser, checkpoint_file, fail, number, output_file
from comfy_cli import find_comfyui, has_accelerator, start_comfyui
from image_files import load_images

# The options checked against the training node's own input limits once ComfyUI is imported.
NODE_INPUTS = {"scheduler": "scheduler", "steps": "steps", "guidance": "guidance", "iterations": "iterations",
               "learning_rate": "learning_rate", "kl_weight": "kl_weight", "seed": "seed", "variations": "variations",
               "clip_lambda": "clip_lambda", "diversity_weight": "diversity_weight"}


def check_against_node(args, input_types: dict) -> None:
    """The numbers and the scheduler within what the node accepts (its INPUT_TYPES, one source of
    truth), before the checkpoint loads."""
    specs = {**input_types.get("required", {}), **input_types.get("optional", {})}
    for option, name in NODE_INPUTS.items():
        if name not in specs or getattr(args, option, None) is None:
            continue
        value, (kind, *rest) = getattr(args, option), specs[name]
        flag = "--" + option.replace("_", "-")
        if isinstance(kind, (list, tuple)):
            if value not in kind:
                fail(f"{flag}: {value!r} is not one of {', '.join(map(str, kind))}")
            continue
        limits = rest[0] if rest else {}
        low, high = limits.get("min", -math.inf), limits.get("max", math.inf)
        if not low <= value <= high:
            fail(f"{flag}: {value:g} is out of range; give a value from {low:g} to {high:g}")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="an SD1.x, SD2.x or SDXL checkpoint (.safetensors)")
    parser.add_argument("--images", nargs="+", required=True, help="image files or folders (one class, one size)")
    parser.add_argument("--prompt", required=True, help="a description of the images")
    parser.add_argument("--negative", default="", help="the null text (default: empty)")
    parser.add_argument("--out", required=True, help="where to write the VAE (.safetensors; its folder is made if missing)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (else that is an error)")
    parser.add_argument("--architecture", default="sequence_mlp", choices=("token_mlp", "sequence_mlp", "transformer"))
    parser.add_argument("--scheduler", default="ddim_uniform")
    parser.add_argument("--steps", type=number(int, 1), default=50)
    parser.add_argument("--guidance", type=number(float), default=7.5)
    parser.add_argument("--iterations", type=number(int, 1), default=500)
    parser.add_argument("--learning-rate", type=number(float, 0, low_open=True), default=1e-3)
    parser.add_argument("--kl-weight", type=number(float, 0), default=1e-4)
    parser.add_argument("--seed", type=number(int, 0), default=0)
    parser.add_argument("--edit-prompt", help="conditional VAE: the edited prompt whose embedding it varies")
    parser.add_argument("--clip-vision", help="conditional VAE: a CLIP vision model (.safetensors)")
    parser.add_argument("--variations", type=number(int, 1), default=2, help="conditional VAE: draws per iteration")
    parser.add_argument("--clip-lambda", type=number(float), default=0.5, help="conditional VAE: λ of eq. 2")
    parser.add_argument("--diversity-weight", type=number(float), default=-0.1, help="conditional VAE: γ of eq. 4 (≤ 0)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is there (the default without one)")
    parser.add_argument("--comfyui", help="the ComfyUI install to use")
    args = parser.parse_args(argv)
    # Every argument is checked before the model loads and the training (minutes) starts.
    out = output_file("--out", args.out, ".safetensors")
    if out.exists() and not args.overwrite:
        fail(f"--out: {args.out!r} exists; choose another name, or pass --overwrite to replace it")
    checkpoint = checkpoint_file("--checkpoint", args.checkpoint)
    if (args.edit_prompt is None) != (args.clip_vision is None):
        parser.error("a conditional VAE needs both --edit-prompt and --clip-vision")
    if args.edit_prompt is not None and not args.edit_prompt.strip():
        fail("--edit-prompt: it is empty; write the edited prompt whose embedding the VAE should vary")
    clip_vision_file = checkpoint_file("--clip-vision", args.clip_vision) if args.clip_vision else None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images = load_images(args.images, "--images")
    if args.clip_vision and images.shape[0] != 1:
        sys.exit("--images: a conditional VAE is trained on the edit of one photo; give one image")
    import torch

    mappings = start_comfyui(find_comfyui(args.comfyui), args.cpu or not has_accelerator(), extra_nodes=False).NODE_CLASS_MAPPINGS
    trainer = "PromptEditTrainEmbeddingVAE" if clip_vision_file is None else "PromptEditTrainConditionalEmbeddingVAE"
    check_against_node(args, mappings[trainer].INPUT_TYPES())
    import comfy.clip_vision
    import comfy.sd
    from comfyui_prompt_edit.base.file_names import file_name_problem

    problem = file_name_problem(out.name.removesuffix(".safetensors"), ".safetensors", str(out.parent))
    if problem:  # before the training, not when its result is written
        parser.error(f"--out: {out.name!r} {problem}")
    if out.is_dir():
        parser.error(f"--out: {args.out} is a folder")
    with torch.inference_mode():
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(checkpoint), output_vae=True, output_clip=True)[:3]
        latent = {"samples": vae.encode(images)}
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(args.prompt))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(args.negative))
        common = (args.architecture, args.scheduler, args.steps, args.guidance, args.iterations, args.learning_rate,
                  args.kl_weight, args.seed, "")
        if args.clip_vision is None:
            output = mappings["PromptEditTrainEmbeddingVAE"]().train(model, positive, negative, *common, latent=latent)
        else:
            clip_vision = comfy.clip_vision.load(str(clip_vision_file))
            if clip_vision is None:
                sys.exit(f"--clip-vision: {args.clip_vision} is not a CLIP vision model ComfyUI recognises")
            noisy, inversion = mappings["PromptEditInvertImage"]().invert(
                model, positive, negative, latent=latent, method="null-text fast", scheduler=args.scheduler,
                steps=args.steps, guidance=args.guidance)
            output = mappings["PromptEditTrainConditionalEmbeddingVAE"]().train(
                model, clip, vae, clip_vision, args.edit_prompt, negative, noisy, *common, args.variations,
                args.clip_lambda, args.diversity_weight, inversion=inversion)
    (trained,) = output["result"]
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        trained.save(out)
    except ValueError as error:  # SaveError: it says where the result is kept instead
        sys.exit(f"--out: {error}")
    print(f"{output['ui']['text'][0]}; wrote {out}")


if __name__ == "__main__":
    main()
