"""Run a ComfyUI workflow (UI or API JSON, e.g. one of example_workflows/) headlessly against a
local ComfyUI install with this pack, and copy the images it saves into an output folder.

    python scripts/run_workflow.py example_workflows/p2p_replace.json --out results/ \\
        --checkpoint ~/models/my_sd15.safetensors --set steps=20

``--set NAME=VALUE`` overrides that input on every node that has it (numbers and true/false are
parsed). Input images (LoadImage) are read from ComfyUI's input folder, or from --input-dir.
Exit status 0 when the workflow ran; otherwise a message names the node and the problem.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from comfy_cli import WorkflowError, execute_prompt, find_comfyui, has_accelerator, start_comfyui
from workflow_api import OverrideError, apply_overrides, load_workflow, to_api


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="a workflow JSON file (UI or API format)")
    parser.add_argument("--out", default="workflow_output", help="folder for the saved images (default workflow_output/)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override an input on every node that has it")
    parser.add_argument("--input-dir", help="ComfyUI's input folder (where LoadImage reads)")
    parser.add_argument("--models-dir", help="a models folder to use besides ComfyUI's (checkpoints/, inversions/, …)")
    parser.add_argument("--checkpoint", help="a checkpoint file to load instead of the one the workflow names "
                                             "(same as --set ckpt_name=NAME with its folder added to the checkpoints)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU (the default without one)")
    parser.add_argument("--comfyui", help="the ComfyUI install to use")
    args = parser.parse_args(argv)
    try:
        workflow = load_workflow(args.workflow)
    except (OSError, json.JSONDecodeError) as error:
        sys.exit(f"{args.workflow}: cannot read the workflow ({error})")
    nodes = start_comfyui(find_comfyui(args.comfyui), args.cpu or not has_accelerator())
    import folder_paths

    # SaveImage writes into a scratch folder; the images are copied to --out
    scratch = Path(tempfile.mkdtemp(prefix="run_workflow_"))
    folder_paths.set_output_directory(str(scratch / "output"))
    folder_paths.set_temp_directory(str(scratch / "temp"))
    if args.input_dir:
        folder_paths.set_input_directory(str(Path(args.input_dir).resolve()))
    if args.models_dir:
        for kind in ("checkpoints", "vae", "clip_vision", "inversions", "embedding_vae", "lpips"):
            folder_paths.add_model_folder_path(kind, str(Path(args.models_dir).resolve() / kind))
    overrides = list(args.set)
    if args.checkpoint:
        checkpoint = Path(args.checkpoint).expanduser().resolve()
        if not checkpoint.is_file():
            sys.exit(f"--checkpoint: no file {checkpoint}")
        folder_paths.add_model_folder_path("checkpoints", str(checkpoint.parent))
        overrides.append(f"ckpt_name={checkpoint.name}")
    try:
        prompt = to_api(workflow, nodes.NODE_CLASS_MAPPINGS)
    except KeyError as error:
        sys.exit(f"{args.workflow}: {error.args[0]}; install the custom nodes it uses")
    try:
        apply_overrides(prompt, overrides)
    except OverrideError as error:
        sys.exit(str(error))
    try:
        outputs = execute_prompt(prompt)
    except WorkflowError as error:
        sys.exit(f"{args.workflow}: {error}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for node_id, output in outputs.items():
        for entry in output.get("images", []):
            directory = folder_paths.get_directory_by_type(entry.get("type", "output"))
            source = Path(directory) / entry.get("subfolder", "") / entry["filename"]
            target = out / f"node{node_id}_{entry['filename']}"
            shutil.copyfile(source, target)
            copied.append(target)
        for text in output.get("text", []):
            print(f"node {node_id}: {text}")
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"ran {args.workflow}: {len(copied)} image(s) in {out.resolve()}")
    for path in copied:
        print(f"  {path}")


if __name__ == "__main__":
    main()
