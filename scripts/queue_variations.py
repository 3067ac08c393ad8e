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
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from workflow_api import (FRONTEND_ONLY_NODES, OverrideError, apply_overrides, is_api_format,
                          load_workflow, ui_to_api)

VARIATIONS_NODE = "PromptEditStochasticEmbeddings"
SEED_INPUTS = ("seed", "noise_seed")


class ServerError(RuntimeError):
    pass


class Server:
    """The parts of ComfyUI's HTTP API the script uses; every request is bounded by ``timeout``."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def _request(self, path: str, body: dict | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise ServerError(f"{path}: the server answered {error.code}: {_explain(detail)}") from None
        except (urllib.error.URLError, OSError) as error:
            raise ServerError(f"cannot reach the ComfyUI server at {self.url} ({getattr(error, 'reason', error)}); "
                              "start it or pass --server") from None

    def json(self, path: str, body: dict | None = None):
        return json.loads(self._request(path, body))

    def image(self, entry: dict) -> bytes:
        query = urllib.parse.urlencode({k: entry.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request(f"/view?{query}")


def _explain(detail: str) -> str:
    try:
        body = json.loads(detail)
    except ValueError:
        return detail[:500]
    lines = [body.get("error", {}).get("message", "")] if isinstance(body.get("error"), dict) else []
    for node_id, entry in (body.get("node_errors") or {}).items():
        for error in entry.get("errors", []):
            lines.append(f"node {node_id} ({entry.get('class_type')}): {error.get('message')}: {error.get('details')}")
    return "; ".join(line for line in lines if line) or detail[:500]


class _InputSpec:
    """Stands in for a node class in ui_to_api: its INPUT_TYPES from the server's /object_info."""

    def __init__(self, info: dict) -> None:
        self.info = info

    def INPUT_TYPES(self) -> dict:  # noqa: N802 (ComfyUI's name)
        return self.info.get("input", {})


def api_prompt(workflow: dict, object_info: dict) -> dict:
    """The workflow as an API prompt, checked against the node types the server knows."""
    types = ({node["class_type"] for node in workflow.values()} if is_api_format(workflow)
             else {node["type"] for node in workflow["nodes"]})
    unknown = sorted(types - set(object_info) - FRONTEND_ONLY_NODES)
    if unknown:
        raise ServerError(f"the server does not know the node types {unknown}; install the custom nodes that provide them")
    if is_api_format(workflow):
        return workflow
    return ui_to_api(workflow, {name: _InputSpec(info) for name, info in object_info.items()})


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


def wait_for(server: Server, prompt_id: str, deadline: float) -> dict:
    while time.monotonic() < deadline:
        history = server.json(f"/history/{prompt_id}")
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status", {})
            if status.get("status_str") == "error":
                messages = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                detail = messages[0][1] if messages else {}
                raise ServerError(f"the run failed in {detail.get('node_type')} (node {detail.get('node_id')}): "
                                  f"{detail.get('exception_message', 'see the server log')}")
            return entry.get("outputs", {})
        time.sleep(0.5)
    raise ServerError(f"no result for prompt {prompt_id} within --timeout; the server may be busy or stuck")


def summarise(files: dict[str, list[Path]], reference: str | None, lpips: str | None) -> dict:
    summary: dict = {label: {"images": len(paths)} for label, paths in files.items()}
    if reference is None:
        return summary
    from comfy_cli import import_pack
    from image_files import load_images

    import_pack()
    from comfyui_prompt_edit.evaluation.lpips import LPIPS
    from comfyui_prompt_edit.evaluation.metrics import evaluate

    reference_image = load_images([reference], "--reference", multiple_of=1)
    distance = LPIPS.load(lpips) if lpips else None
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

    server = Server(args.server, timeout=min(30.0, args.timeout))
    staging = Path(tempfile.mkdtemp(prefix=".queue_", dir=out.parent if out.parent.exists() else None))
    try:
        prompt = api_prompt(workflow, server.json("/object_info"))
        apply_overrides(prompt, args.set)
        client = uuid.uuid4().hex
        files: dict[str, list[Path]] = {}
        for label, seed, job in jobs(prompt, args.count, args.seed_start, scales):
            prompt_id = server.json("/prompt", {"prompt": job, "client_id": client})["prompt_id"]
            outputs = wait_for(server, prompt_id, time.monotonic() + args.timeout)
            for node_id, output in outputs.items():
                for n, entry in enumerate(output.get("images", [])):
                    path = staging / f"{label}_seed{seed}_node{node_id}_{n:02d}.png"
                    path.write_bytes(server.image(entry))
                    files.setdefault(label, []).append(path)
            print(f"{label} seed {seed}: {sum(len(o.get('images', [])) for o in outputs.values())} image(s)", flush=True)
        summary = summarise(files, args.reference, args.lpips)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2))
        (staging / "summary.md").write_text(markdown(summary) + "\n")
        staging.rename(out)
    except (ServerError, OverrideError, ValueError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        sys.exit(str(error))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(markdown(summary))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
