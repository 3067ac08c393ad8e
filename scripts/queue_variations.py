"""Queue a workflow on a running ComfyUI server N times with varied seeds (and noise scales), wait
for the results over its HTTP API, and collect the images and a metrics summary.

    python scripts/queue_variations.py example_workflows/variations_token_noise.json \\
        --server http://127.0.0.1:8188 --count 4 --scales 0.1,0.3,0.6 --out runs/cat \\
        --reference source.png --lpips models/lpips/vgg16_lpips.safetensors

Every ``seed``/``noise_seed`` widget gets ``seed-start + i`` for run i; ``--scales`` sets the
``scale`` of every 'Stochastic Embeddings' node (one series of runs per scale). The output folder
is written only when every run finished (a failed or interrupted session leaves nothing behind):
the images, ``summary.json`` and ``summary.md`` (image count per scale, and with --reference the
metrics of each scale's images against it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from comfy_client import Server, ServerError, api_prompt
from workflow_api import OverrideError, apply_overrides, load_workflow

VARIATIONS_NODE = "PromptEditStochasticEmbeddings"
SEED_INPUTS = ("seed", "noise_seed")


def jobs(prompt: dict, count: int, seed_start: int, scales: list[float] | None):
    """(label, prompt) of every run: ``count`` seeds for each scale."""
    has_variations = any(node["class_type"] == VARIATIONS_NODE for node in prompt.values())
    if scales and not has_variations:
        raise ValueError(f"--scales: the workflow has no '{VARIATIONS_NODE}' node whose scale could vary")
    for scale in scales or [None]:
        for i in range(count):
            job = json.loads(json.dumps(prompt))
            for node in job.values():
                for name in SEED_INPUTS:
                    if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                        node["inputs"][name] = seed_start + i
                if scale is not None and node["class_type"] == VARIATIONS_NODE:
                    node["inputs"]["scale"] = scale
            yield ("all" if scale is None else f"scale{scale:g}"), seed_start + i, job


def load_metrics(reference: str | None, lpips: str | None):
    """(reference IMAGE, LPIPS distance) for the summary, read before anything is queued so that a
    bad file stops the script before the runs rather than after them; (None, None) without one."""
    if reference is None:
        return None, None
    from comfy_cli import import_pack
    from image_files import load_images

    import_pack()
    from comfyui_prompt_edit.evaluation.lpips import LPIPS, LPIPSFileError

    if not Path(reference).is_file():
        raise ValueError(f"--reference: {reference} does not exist")
    reference_image = load_images([reference], "--reference", multiple_of=1)
    if lpips and not Path(lpips).is_file():
        raise ValueError(f"--lpips: {lpips} does not exist")
    try:
        return reference_image, LPIPS.load(lpips) if lpips else None
    except LPIPSFileError as error:
        raise ValueError(f"--lpips: {error}") from None


def summarise(files: dict[str, list[Path]], reference_image, distance) -> dict:
    summary: dict = {label: {"images": len(paths)} for label, paths in files.items()}
    if reference_image is None:
        return summary
    from comfyui_prompt_edit.evaluation.metrics import evaluate
    from image_files import load_images

    for label, paths in files.items():
        images = load_images([str(p) for p in paths], f"images of {label}", multiple_of=1)
        summary[label].update(evaluate(images, reference_image, lpips=distance))
    return summary


def markdown(summary: dict) -> str:
    columns = sorted({key for row in summary.values() for key in row})
    lines = ["| series | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, row in summary.items():
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="a workflow JSON file (UI or API format)")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="the ComfyUI server (default http://127.0.0.1:8188)")
    parser.add_argument("--count", type=int, default=4, help="runs per scale (default 4)")
    parser.add_argument("--seed-start", type=int, default=0)
    parser.add_argument("--scales", help="comma-separated noise scales / temperatures for 'Stochastic Embeddings'")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override an input on every node that has it")
    parser.add_argument("--out", required=True, help="folder for the images and summary (must not exist yet)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each run (default 600)")
    parser.add_argument("--reference", help="source image: adds the metrics of each series against it")
    parser.add_argument("--lpips", help="VGG-16 (+ LPIPS heads) weights, for the LPIPS metrics")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        parser.error(f"--out: {out} exists; choose a new folder")
    if not out.absolute().parent.is_dir():
        parser.error(f"--out: the folder {out.absolute().parent} does not exist; create it first")
    if not 1 <= args.count <= 1000:
        parser.error("--count must be between 1 and 1000")
    try:
        scales = [float(s) for s in args.scales.split(",")] if args.scales else None
    except ValueError:
        parser.error(f"--scales: {args.scales!r} is not a comma-separated list of numbers")
    try:
        workflow = load_workflow(args.workflow)
    except (OSError, ValueError) as error:
        sys.exit(f"{args.workflow}: cannot read the workflow ({error})")

    try:
        reference_image, distance = load_metrics(args.reference, args.lpips)
    except ValueError as error:
        parser.error(str(error))

    server = Server(args.server, timeout=min(30.0, args.timeout))
    # the runs land beside --out and are renamed into it at the end (one file system)
    staging = Path(tempfile.mkdtemp(prefix=".queue_", dir=out.absolute().parent))
    try:
        prompt = api_prompt(workflow, server.json("/object_info"))
        apply_overrides(prompt, args.set)
        all_jobs = list(jobs(prompt, args.count, args.seed_start, scales))
        client = uuid.uuid4().hex
        files: dict[str, list[Path]] = {}
        for label, seed, job in all_jobs:
            prompt_id = server.post_prompt(job, client)
            outputs = server.wait(prompt_id, args.timeout)
            for node_id, output in outputs.items():
                for n, entry in enumerate(output.get("images", [])):
                    path = staging / f"{label}_seed{seed}_node{node_id}_{n:02d}.png"
                    path.write_bytes(server.image(entry))
                    files.setdefault(label, []).append(path)
            print(f"{label} seed {seed}: {sum(len(o.get('images', [])) for o in outputs.values())} image(s)", flush=True)
        summary = summarise(files, reference_image, distance)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2))
        (staging / "summary.md").write_text(markdown(summary) + "\n")
        staging.rename(out)
    except (ServerError, OverrideError, ValueError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        sys.exit(str(error))
    except KeyboardInterrupt:
        shutil.rmtree(staging, ignore_errors=True)
        sys.exit(f"interrupted: nothing written to {out} (runs still queued on {args.server} go on there)")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(markdown(summary))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
