"""Evaluate edits or variations against a source image with the paper's metrics, from the command
line, with the same code as the 'Edit Metrics' node.

    python scripts/evaluate.py --reference source.png --images variations/ --edit plain_edit.png \\
        --lpips models/lpips/vgg16_lpips.safetensors --json metrics.json

PSNR, SSIM and LPIPS need no ComfyUI. CLIP-I and CLIP-T use ComfyUI's loaders: --clip-vision (a
CLIP vision model) and, for CLIP-T, --checkpoint (its text encoder) and --prompt. Nothing is
downloaded. Prints a markdown table; --json writes the numbers.
"""

from __future__ import annotations

import json
import sys

from arguments import ArgumentParser, checkpoint_file, fail, output_file
from comfy_cli import find_comfyui, has_accelerator, import_pack, start_comfyui
from image_files import image_files, load_images


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="the source image (I)")
    parser.add_argument("--images", nargs="+", required=True, help="the edits or variations (I''): files or folders")
    parser.add_argument("--edit", help="the plain edit (I'), for eq. 5's bound")
    parser.add_argument("--lpips", help="VGG-16 (+ LPIPS heads) weights as safetensors")
    parser.add_argument("--clip-vision", help="a CLIP vision model (.safetensors), for CLIP-I and CLIP-T")
    parser.add_argument("--checkpoint", help="a checkpoint whose text encoder matches --clip-vision, for CLIP-T")
    parser.add_argument("--prompt", help="the edit prompt, for CLIP-T")
    parser.add_argument("--classes", help="class score: comma-separated class prompts, the target first (CLIP zero-shot)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--comfyui", help="the ComfyUI install (only for CLIP metrics)")
    args = parser.parse_args(argv)
    # Every argument is checked before torch, the images and the models load.
    lpips_file = checkpoint_file("--lpips", args.lpips, (".safetensors",)) if args.lpips else None
    clip_vision_file = checkpoint_file("--clip-vision", args.clip_vision) if args.clip_vision else None
    checkpoint = checkpoint_file("--checkpoint", args.checkpoint) if args.checkpoint else None
    for option in ("prompt", "classes"):
        if getattr(args, option) is not None and not (args.clip_vision and args.checkpoint):
            parser.error(f"--{option} needs --clip-vision and --checkpoint")
    if args.prompt is not None and not args.prompt.strip():
        fail("--prompt: it is empty; write the edit prompt (CLIP-T compares the images with it)")
    names = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes is not None else []
    if args.classes is not None and len(names) < 2:
        fail("--classes: give the target class and at least one other, comma-separated")
    json_file = output_file("--json", args.json, ".json") if args.json else None
    for option, paths in (("--images", args.images), ("--reference", [args.reference]),
                          ("--edit", [args.edit] if args.edit else [])):
        if paths:
            image_files(paths, option)

    images = load_images(args.images, "--images", multiple_of=1)
    reference = load_images([args.reference], "--reference", multiple_of=1)
    edit = load_images([args.edit], "--edit", multiple_of=1) if args.edit else None
    import torch
    image_features = text_features = classifier = None
    if args.clip_vision:
        start_comfyui(find_comfyui(args.comfyui), not has_accelerator(), extra_nodes=False)
        import comfy.clip_vision
        import comfy.sd

        clip_vision = comfy.clip_vision.load(str(clip_vision_file))
        if clip_vision is None:
            sys.exit(f"--clip-vision: {args.clip_vision} is not a CLIP vision model ComfyUI recognises")
        from comfyui_prompt_edit.evaluation.clip_features import clip_image_features, clip_text_features
        from comfyui_prompt_edit.evaluation.metrics import zero_shot_classifier

        image_features = clip_image_features(clip_vision)
        if args.prompt or args.classes:
            clip = comfy.sd.load_checkpoint_guess_config(str(checkpoint), output_vae=False, output_clip=True)[1]
            text_features = clip_text_features(clip, args.prompt) if args.prompt else None
            if names:
                classifier = zero_shot_classifier(image_features, torch.cat([clip_text_features(clip, c) for c in names]))
    import_pack()  # the pack's core imports without ComfyUI
    from comfyui_prompt_edit.evaluation.lpips import LPIPS, LPIPSFileError
    from comfyui_prompt_edit.evaluation.metrics import evaluate, markdown_table

    try:
        lpips = LPIPS.load(str(lpips_file)) if lpips_file else None
        rows = evaluate(images, reference, edit, lpips, image_features, text_features, classifier)
    except (LPIPSFileError, ValueError) as error:
        sys.exit(str(error))
    print(markdown_table(rows))
    if json_file:
        try:
            json_file.write_text(json.dumps(rows, indent=2))
        except OSError as error:  # the table above holds the numbers
            sys.exit(f"--json: cannot write {json_file} ({error.strerror or error}); the numbers are in the table above")
        print(f"wrote {json_file}")


if __name__ == "__main__":
    main()
