"""Edit every row of a benchmark manifest (PIE-Bench's mapping_file.json, or JSON Lines) with a
workflow, on one or more running ComfyUI servers, writing each result as it finishes.

    python scripts/batch_edit.py PIE-Bench/mapping_file.json --out runs/pie \\
        --server http://gpu1:8188 --server http://gpu2:8188 --set ckpt_name=sd15.safetensors --metrics

Each row's image is uploaded through /upload/image and its texts are put into the workflow's nodes
by class: LoadImage gets the image, 'P2P Prompts' the source and target prompts (and every text
encoder whose text is the workflow's source prompt: the photo description of an inversion gets the
source prompt too), 'P2P Local Blend' the blend words, the text encoders of an
InstructPixToPixConditioning the instruction; ``--map FIELD=NODE.input`` for other workflows.
Results: ``DIR/<id>.png`` (the last image the workflow saves: the edit), ``DIR/<id>_<k>.png`` (the
others), a line per row in ``DIR/results.jsonl``; bad rows in ``DIR/errors.jsonl``. A rerun skips
the rows already done. Exit status 0 only when every row is done.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from comfy_client import RunFailed, Server, ServerError, ServerUnreachable, api_prompt
from dispatch import AllServersDown, dispatch
from edit_manifest import EditRow, RowError, read_manifest
from workflow_api import OverrideError, apply_overrides, load_workflow

PACK_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = PACK_ROOT / "example_workflows" / "inversion_direct_p2p_replace.json"
FIELDS = ("image", "source_prompt", "target_prompt", "instruction", "blend_source", "blend_target")
P2P_PROMPTS, LOCAL_BLEND = "PromptEditP2PPrompts", "PromptEditP2PLocalBlend"


class WorkflowMapError(ValueError):
    pass


def field_targets(prompt: dict, maps: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Where each row field goes: {field: [(node id, input name)]}, found by node class, replaced
    per field by ``--map FIELD=NODE.input``."""
    targets: dict[str, list[tuple[str, str]]] = {name: [] for name in FIELDS}
    by_class = lambda kind: [i for i, node in prompt.items() if node["class_type"] == kind]  # noqa: E731
    targets["image"] = [(i, "image") for i in by_class("LoadImage")]
    sources = {prompt[i]["inputs"].get("source") for i in by_class(P2P_PROMPTS)}
    targets["source_prompt"] = [(i, "source") for i in by_class(P2P_PROMPTS)]
    targets["target_prompt"] = [(i, "edits") for i in by_class(P2P_PROMPTS)]
    # the description of the photo an inversion is conditioned on repeats the P2P source prompt
    targets["source_prompt"] += [(i, "text") for i, node in prompt.items()
                                 if node["inputs"].get("text") in sources and isinstance(node["inputs"]["text"], str)]
    targets["blend_source"] = [(i, "source_words") for i in by_class(LOCAL_BLEND)]
    targets["blend_target"] = [(i, "target_words") for i in by_class(LOCAL_BLEND)]
    for i in by_class("InstructPixToPixConditioning"):
        link = prompt[i]["inputs"].get("positive")
        if isinstance(link, list) and "text" in prompt.get(link[0], {}).get("inputs", {}):
            targets["instruction"].append((link[0], "text"))
    explicit: dict[str, list[tuple[str, str]]] = {}
    for item in maps:
        name, sep, where = item.partition("=")
        node_id, dot, input_name = where.partition(".")
        if not sep or not dot or name not in FIELDS:
            raise WorkflowMapError(f"--map {item!r}: write FIELD=NODE.input with FIELD one of {', '.join(FIELDS)}")
        if node_id not in prompt:
            raise WorkflowMapError(f"--map {item!r}: the workflow has no node {node_id!r} (ids: {', '.join(prompt)})")
        explicit.setdefault(name, []).append((node_id, input_name))
    targets.update(explicit)
    if len(targets["image"]) != 1:
        found = ", ".join(i for i, _ in targets["image"]) or "none"
        raise WorkflowMapError(f"the workflow needs exactly one LoadImage node for the row's image (found: {found}); "
                               "pass --map image=NODE.image")
    if not targets["source_prompt"] or not targets["target_prompt"]:
        raise WorkflowMapError(f"the workflow has no '{P2P_PROMPTS}' node for the prompts; "
                               "pass --map source_prompt=NODE.input and --map target_prompt=NODE.input")
    return targets


def fill(prompt: dict, targets: dict, row: EditRow, image_name: str) -> dict:
    """A copy of the prompt with the row's image and texts put in."""
    job = json.loads(json.dumps(prompt))
    blend = row.blend_words or (", ".join(row.source_words), ", ".join(row.target_words))
    values = {"image": image_name, "source_prompt": row.source_prompt, "target_prompt": row.target_prompt,
              "instruction": row.instruction, "blend_source": blend[0], "blend_target": blend[1]}
    for name, places in targets.items():
        if values[name] is None:
            continue
        for node_id, input_name in places:
            job[node_id]["inputs"][input_name] = values[name]
    return job


def output_images(outputs: dict) -> list[dict]:
    """The saved images of a run (SaveImage's, type "output"), else every image it shows."""
    entries = [entry for output in outputs.values() for entry in output.get("images", [])]
    saved = [entry for entry in entries if entry.get("type") == "output"]
    return saved or entries


class Results:
    """DIR/<id>.png and results.jsonl, written as rows finish (each file atomically, each line
    flushed to disk), and errors.jsonl of this run."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.done = self._finished_ids()
        self.errors = open(out / "errors.jsonl", "w", encoding="utf-8")
        self.error_count = 0

    def _finished_ids(self) -> set[str]:
        done = set()
        path = self.out / "results.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row_id = json.loads(line)["id"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash
                if (self.out / f"{row_id}.png").is_file():
                    done.add(row_id)
        return done

    def _write(self, name: str, data: bytes) -> None:
        temporary = self.out / f".{name}.{uuid.uuid4().hex[:8]}.part"
        temporary.write_bytes(data)
        os.replace(temporary, self.out / name)

    def add(self, row: EditRow, server: str, seconds: float, images: list[bytes], metrics: dict | None) -> None:
        names = [f"{row.id}_{k}.png" for k in range(len(images) - 1)] + [f"{row.id}.png"]
        for name, data in zip(names, images):
            self._write(name, data)
        record = {"id": row.id, "server": server, "seconds": round(seconds, 3), "outputs": names}
        if row.edit_type is not None:
            record["edit_type"] = row.edit_type
        if metrics:
            record["metrics"] = metrics
        with open(self.out / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.add(row.id)

    def error(self, row_id: str, message: str) -> None:
        self.errors.write(json.dumps({"id": row_id, "error": message}) + "\n")
        self.errors.flush()
        self.error_count += 1


class Progress:
    """tqdm's bar (rate, ETA) when tqdm is installed, else a line per row."""

    def __init__(self, total: int, initial: int) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.bar = tqdm(total=total, initial=initial, unit="edit", file=sys.stderr) if tqdm else None
        self.count, self.total, self.start = initial, total, time.monotonic()

    def step(self, note: str) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(1)
        else:
            print(f"[{self.count}/{self.total}] {note}", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def connect(urls: list[str], timeout: float) -> tuple[list[Server], dict]:
    """The servers, each checked to answer (the first one's /object_info is returned); exits naming
    every server that does not answer."""
    servers = [Server(url, timeout=timeout) for url in urls]
    infos, dead = {}, []
    for server in servers:
        try:
            infos[server.url] = server.json("/object_info")
        except ServerError as error:
            dead.append(f"{server.url} ({error})")
    if dead:
        raise ServerUnreachable("--server: no answer from " + "; ".join(dead) + "; start them or leave them out")
    return servers, infos[servers[0].url]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", help="PIE-Bench's mapping_file.json, or JSON Lines {id, image, source_prompt, target_prompt, ...}")
    parser.add_argument("--out", required=True, help="folder for the results (created; a rerun resumes in it)")
    parser.add_argument("--images", help="folder the image paths start at (default: annotation_images/ beside a "
                                         "mapping_file.json, the manifest's folder for JSON Lines)")
    parser.add_argument("--workflow", default=str(DEFAULT_WORKFLOW),
                        help="workflow JSON (UI or API); default: the 'edit a photo with direct inversion' example")
    parser.add_argument("--server", action="append", default=[], metavar="URL",
                        help="a running ComfyUI server with this pack (repeat for several; default http://127.0.0.1:8188)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override an input on every node that has it")
    parser.add_argument("--map", action="append", default=[], metavar="FIELD=NODE.input",
                        help=f"put a row field into a node's input ({', '.join(FIELDS)})")
    parser.add_argument("--per-server", type=int, default=2, help="prompts of ours in flight per server (default 2)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for one row (default 1800)")
    parser.add_argument("--limit", type=int, help="only the first N rows")
    ray = parser.add_argument_group("Ray (pip install \".[distributed]\")")
    ray.add_argument("--ray", metavar="ADDRESS", help="start ComfyUI servers on a Ray cluster: auto, ray://HOST:10001, "
                                                     "or local (Ray on this machine)")
    ray.add_argument("--ray-cpu", action="store_true", help="one server per CPU slot instead of one per GPU")
    ray.add_argument("--ray-actors", type=int, help="at most this many servers (local: also Ray's CPU slots)")
    ray.add_argument("--comfyui", help="the ComfyUI install on every node (default $COMFYUI_PATH)")
    ray.add_argument("--ray-custom-nodes", help="custom_nodes folder the servers load (default the install's; must hold this pack)")
    ray.add_argument("--ray-models", help="models folder the servers read (default the install's)")
    parser.add_argument("--metrics", action="store_true",
                        help="PIE-Bench's metrics per row, and DIR/summary.md + summary.json (means per edit type)")
    parser.add_argument("--dino", help="with --metrics: a DINO ViT folder (transformers), for the structure distance")
    parser.add_argument("--clip", help="with --metrics: a CLIP folder (transformers, with its tokenizer), for the CLIP similarities")
    parser.add_argument("--lpips", help="with --metrics: VGG-16 (+ LPIPS heads) safetensors, for the background LPIPS")
    args = parser.parse_args(argv)
    if args.ray:
        args.comfyui = args.comfyui or os.environ.get("COMFYUI_PATH")
        if not args.comfyui:
            parser.error("--ray needs the ComfyUI install's path on the nodes: --comfyui or COMFYUI_PATH")
    elif not args.server:
        args.server = ["http://127.0.0.1:8188"]
    if args.per_server < 1:
        parser.error("--per-server must be at least 1")
    for option in ("dino", "clip", "lpips"):
        if getattr(args, option) and not args.metrics:
            parser.error(f"--{option} is used only with --metrics")
    return args


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # a stopped job (kill, Kubernetes) ends as Ctrl-C does: nothing finished is lost


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        rows, bad_rows = read_manifest(Path(args.manifest), Path(args.images) if args.images else None)
    except (OSError, ValueError) as error:
        sys.exit(f"{args.manifest}: cannot read the manifest ({error})")
    if args.limit is not None:
        rows = rows[:args.limit]
    try:
        workflow = load_workflow(args.workflow)
    except (OSError, ValueError) as error:
        sys.exit(f"--workflow {args.workflow}: cannot read the workflow ({error})")
    ray = actors = None
    if args.ray:
        import ray_servers

        ray = ray_servers.connect(args.ray, args.ray_actors)
        actors, urls = ray_servers.start_servers(ray, args.comfyui, args.ray_custom_nodes, args.ray_models,
                                                 args.ray_cpu, args.ray_actors)
        print(f"Ray: {len(urls)} ComfyUI server(s): {', '.join(urls)}", file=sys.stderr)
        args.server = args.server + urls
    try:
        return _main(args, rows, bad_rows, workflow)
    finally:
        if actors is not None:
            ray_servers.stop_servers(ray, actors)
            ray.shutdown()


def _main(args: argparse.Namespace, rows: list[EditRow], bad_rows: list, workflow: dict) -> int:
    try:
        servers, object_info = connect(args.server, timeout=min(60.0, args.timeout))
        template = api_prompt(workflow, object_info)
        apply_overrides(template, args.set)
        targets = field_targets(template, args.map)
    except (ServerError, OverrideError, WorkflowMapError, ValueError, KeyError) as error:
        sys.exit(str(error))
    metrics = None
    if args.metrics:
        from edit_metrics import EditMetrics, MetricsSetupError

        try:
            metrics = EditMetrics(args.dino, args.clip, args.lpips, log=lambda text: print(text, file=sys.stderr))
        except MetricsSetupError as error:
            sys.exit(str(error))
    return run(rows, bad_rows, servers, template, targets, Path(args.out), args.per_server, args.timeout, metrics)


def write_summary(out: Path) -> str:
    """DIR/summary.json and summary.md from every row in results.jsonl (earlier runs' too)."""
    from comfy_cli import import_pack

    import_pack()
    from comfyui_prompt_edit.evaluation import pie_bench

    records = {}
    for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            records[record["id"]] = record
        except (ValueError, KeyError, TypeError):
            continue
    summary = pie_bench.summarise([r for r in records.values() if r.get("metrics")])
    table = pie_bench.markdown(summary)
    for name, text in (("summary.json", json.dumps(summary, indent=2)), ("summary.md", table + "\n")):
        temporary = out / f".{name}.part"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, out / name)
    return table


def run(rows: list[EditRow], bad_rows: list[tuple[str, str]], servers: list[Server], template: dict,
        targets: dict, out: Path, per_server: int, timeout: float, metrics=None) -> int:
    results = Results(out)
    for row_id, message in bad_rows:
        results.error(row_id, message)
    todo = []
    for row in rows:
        if row.id in results.done:
            continue
        try:
            row.load()  # the image and mask are checked before anything is queued
        except RowError as error:
            results.error(row.id, str(error))
            continue
        todo.append(row)
    total = len(rows) + len(bad_rows)
    progress = Progress(total, total - len(todo) - results.error_count)
    client = uuid.uuid4().hex

    def run_row(server: Server, row: EditRow):
        start = time.monotonic()
        name = server.upload_image(f"batch_edit_{row.id}{row.image.suffix.lower()}", row.image.read_bytes())
        prompt_id = server.post_prompt(fill(template, targets, row, name), client)
        outputs = server.wait(prompt_id, timeout)
        images = [server.image(entry) for entry in output_images(outputs)]
        if not images:
            raise RunFailed("the workflow saved no image; add a SaveImage node")
        return time.monotonic() - start, images

    def on_done(row: EditRow, server: Server, result) -> None:
        seconds, images = result
        scores = None
        if metrics is not None:
            source, mask = row.load()
            scores = metrics.measure(source, images[-1], mask, row.target_prompt)
        results.add(row, server.url, seconds, images, scores)
        progress.step(f"{row.id} on {server.url}")

    def on_error(row: EditRow, error: Exception) -> None:
        results.error(row.id, str(error))
        progress.write(f"{row.id}: {error}")

    try:
        dispatch(servers, todo, run_row, on_done, on_error, per_server=per_server, log=progress.write)
    except AllServersDown as error:
        progress.close()
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted: {len(results.done)} row(s) done in {out}; run the same command again to go on",
              file=sys.stderr)
        return 130
    progress.close()
    if metrics is not None and results.done:
        print(write_summary(out))
    missing = len(rows) - len(results.done) + len(bad_rows)
    if missing:
        print(f"{len(results.done)} of {total} row(s) done; {missing} not: see {out / 'errors.jsonl'}", file=sys.stderr)
        return 1
    print(f"all {total} row(s) done in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
