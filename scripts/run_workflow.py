"""Run a ComfyUI workflow (UI or API JSON, e.g. one of example_workflows/) headlessly against a
local ComfyUI install with this pack, and copy the images it saves into an output folder.

    python scripts/run_workflow.py example_workflows/p2p_replace.json --out results/ \\
        --checkpoint ~/models/my_sd15.safetensors --set steps=20

``--set NAME=VALUE`` overrides that input on every node that has it (numbers and true/false are
parsed). Input images (LoadImage) are read from ComfyUI's input folder, or from --input-dir.
Exit status 0 when the workflow ran; otherwise a message names the node and the problem. The
arguments are checked before ComfyUI starts. Images already in --out are never overwritten (a
new name gets _1, _2, …), and the images a failed or interrupted run saved before it stopped are
copied to --out too; the scratch folder is always removed.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from arguments import (ArgumentParser, checkpoint_file, fail, free_name, input_file, input_folder, output_folder,
                       remove_if_empty)
from comfy_cli import WorkflowError, execute_prompt, find_comfyui, has_accelerator, load_extra_nodes, start_comfyui
from workflow_api import (FRONTEND_ONLY_NODES, OverrideError, apply_overrides, is_api_format, load_workflow, parse_value,
                          to_api)

MODEL_KINDS = ("checkpoints", "vae", "clip_vision", "inversions", "embedding_vae", "lpips")


def workflow_problem(workflow) -> str | None:
    """Why `workflow` is not a runnable workflow (its shape and its links; the node types are
    checked against ComfyUI later), or None."""
    if not isinstance(workflow, dict):
        return f"it holds a JSON {type(workflow).__name__}, not a workflow; give a workflow saved from ComfyUI"
    if "nodes" in workflow:  # UI format
        nodes, links = workflow["nodes"], workflow.get("links") or []
        if not isinstance(nodes, list) or not all(isinstance(n, dict) and "id" in n and "type" in n for n in nodes):
            return "its 'nodes' is not a list of nodes with an id and a type; save the workflow from ComfyUI again"
        if not isinstance(links, list):
            return "its 'links' is not a list; save the workflow from ComfyUI again"
        ids = {node["id"] for node in nodes}
        known_links = set()
        for link in links:
            link_id, origin = (link.get("id"), link.get("origin_id")) if isinstance(link, dict) else (
                (link[0], link[1]) if isinstance(link, list) and len(link) >= 3 else (None, None))
            if link_id is None:
                return f"link {link!r} is not a link record; save the workflow from ComfyUI again"
            if origin not in ids:
                return f"link {link_id} comes from node {origin}, which is not in the workflow; reconnect that input in ComfyUI"
            known_links.add(link_id)
        for node in nodes:
            for slot in node.get("inputs") or []:
                if isinstance(slot, dict) and slot.get("link") is not None and slot["link"] not in known_links:
                    return (f"node {node['id']} ({node['type']}) input {slot.get('name')!r} uses link {slot['link']}, "
                            "which is not in the workflow; reconnect that input in ComfyUI")
        return None
    if not workflow or not is_api_format(workflow):
        return "it is neither a UI workflow (no 'nodes') nor an API prompt (node ids to class_type/inputs)"
    for node_id, node in workflow.items():
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and str(value[0]) not in workflow:
                return (f"node {node_id} ({node['class_type']}) input {name!r} comes from node {value[0]}, "
                        "which is not in the workflow; connect it to a node that is")
    return None


def node_types(workflow: dict) -> set[str]:
    """The node classes a (checked) workflow uses."""
    if "nodes" in workflow:
        return {node["type"] for node in workflow["nodes"]} - FRONTEND_ONLY_NODES
    return {node["class_type"] for node in workflow.values()}


def check_overrides(overrides: list[str]) -> None:
    """The --set values that can be checked without the workflow: NAME=VALUE, finite numbers."""
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            fail(f"--set {item!r}: write NAME=VALUE, e.g. --set steps=20")
        parsed = parse_value(value)
        if isinstance(parsed, float) and not math.isfinite(parsed):
            fail(f"--set {item!r}: {value} is not a finite number; give a number")


class CopyError(OSError):
    pass


def override_hint(message: str, overrides: list[str]) -> str:
    """A line naming the --set options whose input a validation error is about (": steps" in
    "Value -3 smaller than min of 1: steps")."""
    if "failed validation" not in message:
        return ""
    named = [item for item in overrides if f": {item.partition('=')[0]}" in message]
    return f"\n{', '.join('--set ' + item for item in named)}: give a value the node accepts (above)" if named else ""


def copy_images(sources: list[tuple[Path, str]], out: Path) -> list[Path]:
    """Copy (file, name) pairs into `out` without overwriting what is there."""
    copied = []
    for source, name in sources:
        target = free_name(out / name)
        try:
            shutil.copyfile(source, target)
        except OSError as error:
            raise CopyError(f"cannot copy {source.name} into {out} ({error.strerror})") from error
        copied.append(target)
    return copied


def saved_so_far(scratch: Path) -> list[tuple[Path, str]]:
    """The files a stopped run had written to its output folder (the finished save nodes')."""
    output = scratch / "output"
    return [(path, "partial_" + "_".join(path.relative_to(output).parts))
            for path in sorted(output.rglob("*")) if path.is_file()] if output.is_dir() else []


class StopOnSignal:
    """Ctrl-C and SIGTERM during the run press ComfyUI's own Cancel (the run stops at its next node
    or sampling step, and the cleanup runs); a second one stops at once. (Python's default
    KeyboardInterrupt would wait: asyncio defers it to the end of the prompt.)"""

    def __init__(self, nodes) -> None:
        self.nodes, self.signal_name, self.previous = nodes, None, {}

    def __enter__(self) -> "StopOnSignal":
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._stop)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _stop(self, signum, frame) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(f"{self.signal_name}: stopping the run at its next step (again: at once)", file=sys.stderr, flush=True)
        self.nodes.interrupt_processing(True)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="a workflow JSON file (UI or API format)")
    parser.add_argument("--out", default="workflow_output", help="folder for the saved images (default workflow_output/)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override an input on every node that has it")
    parser.add_argument("--input-dir", help="ComfyUI's input folder (where LoadImage reads)")
    parser.add_argument("--models-dir", help="a models folder to use besides ComfyUI's (checkpoints/, inversions/, …)")
    parser.add_argument("--checkpoint", help="a checkpoint file to load instead of the one the workflow names "
                                             "(same as --set ckpt_name=NAME with its folder added to the checkpoints)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU (the default without one)")
    parser.add_argument("--comfyui", help="the ComfyUI install to use")
    parser.add_argument("--check", action="store_true", help="only check the arguments and exit (needs neither torch "
                                                             "nor ComfyUI; scripts/edit.sh runs it before any set-up)")
    args = parser.parse_args(argv)

    # Every argument is checked before ComfyUI (seconds) and the workflow (minutes) start.
    path = input_file("workflow", args.workflow, "workflow JSON file")
    try:
        workflow = load_workflow(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        fail(f"workflow {args.workflow!r}: cannot read it as JSON ({error}); give a workflow saved from ComfyUI")
    problem = workflow_problem(workflow)
    if problem:
        fail(f"workflow {args.workflow!r}: {problem}")
    input_dir = input_folder("--input-dir", args.input_dir).resolve() if args.input_dir else None
    models_dir = input_folder("--models-dir", args.models_dir).resolve() if args.models_dir else None
    checkpoint = checkpoint_file("--checkpoint", args.checkpoint).resolve() if args.checkpoint else None
    check_overrides(args.set)
    out, made = output_folder("--out", args.out)
    if args.check:
        remove_if_empty(made)
        return
    try:
        run(args, workflow, find_comfyui(args.comfyui), out, input_dir, models_dir, checkpoint)
    finally:
        remove_if_empty(made)  # when nothing was copied into a folder made for this run


def run(args, workflow: dict, root: Path, out: Path, input_dir: Path | None, models_dir: Path | None,
        checkpoint: Path | None) -> None:
    """Start ComfyUI, run the checked workflow, copy its images into `out`."""
    nodes = start_comfyui(root, args.cpu or not has_accelerator(), extra_nodes=False)
    if node_types(workflow) - set(nodes.NODE_CLASS_MAPPINGS):
        load_extra_nodes(nodes)  # only when the workflow uses them: seconds of start-up
    import folder_paths

    overrides = list(args.set)
    if models_dir:
        for kind in MODEL_KINDS:
            folder_paths.add_model_folder_path(kind, str(models_dir / kind))
    if checkpoint:
        folder_paths.add_model_folder_path("checkpoints", str(checkpoint.parent))
        overrides.append(f"ckpt_name={checkpoint.name}")
    try:
        prompt = to_api(workflow, nodes.NODE_CLASS_MAPPINGS)
    except KeyError as error:
        fail(f"workflow {args.workflow!r}: {error.args[0]}; install the custom nodes it uses")
    except (ValueError, NotImplementedError, TypeError, IndexError) as error:
        fail(f"workflow {args.workflow!r}: cannot convert it to a prompt ({error}); save it from ComfyUI again")
    try:
        apply_overrides(prompt, overrides)
    except OverrideError as error:
        fail(f"{error}; see the inputs of the workflow's nodes")

    # SaveImage writes into a scratch folder, removed whatever happens (a failure, Ctrl-C, SIGTERM);
    # the images are copied to --out, those of a run that stopped half-way too.
    scratch = Path(tempfile.mkdtemp(prefix="run_workflow_"))
    keep_scratch = False
    try:
        folder_paths.set_output_directory(str(scratch / "output"))
        folder_paths.set_temp_directory(str(scratch / "temp"))
        if input_dir:
            folder_paths.set_input_directory(str(input_dir))
        try:
            with StopOnSignal(nodes) as stop:
                outputs = execute_prompt(prompt)
        except (WorkflowError, KeyboardInterrupt) as error:
            kept = copy_images(saved_so_far(scratch), out)
            note = f"\nthe {len(kept)} image(s) saved before it stopped are in {out.resolve()}" if kept else ""
            if isinstance(error, KeyboardInterrupt) or stop.signal_name:
                print(f"interrupted{note}", file=sys.stderr)
                raise SystemExit(130) from None
            sys.exit(f"{args.workflow}: {str(error).rstrip()}{override_hint(str(error), args.set)}{note}")
        sources, texts = [], []
        for node_id, output in outputs.items():
            for entry in output.get("images", []):
                directory = folder_paths.get_directory_by_type(entry.get("type", "output"))
                sources.append((Path(directory) / entry.get("subfolder", "") / entry["filename"],
                                f"node{node_id}_{entry['filename']}"))
            texts += [f"node {node_id}: {text}" for text in output.get("text", [])]
        copied = copy_images(sources, out)
    except CopyError as error:
        # The one case the scratch folder stays: it holds the only copy of the images.
        keep_scratch = True
        sys.exit(f"{error}; the images are left in {scratch / 'output'}: copy them from there")
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    for text in texts:
        print(text)
    print(f"ran {args.workflow}: {len(copied)} image(s) in {out.resolve()}")
    for path in copied:
        print(f"  {path}")


if __name__ == "__main__":
    main()
