"""Throughput of scripts/batch_edit.py: edits per minute with 1 and 2 ComfyUI servers (each pinned
to one CPU thread and, where the machine has them, to a core of its own), and the dispatcher's
overhead against posting the same prompts to one server directly (all uploaded and queued at once,
then collected).

Synthetic PIE-Bench rows (64², the tests' tiny SD1.5 checkpoint, the direct-inversion example with
``--steps``). Each measurement edits its own copies of the rows (other ids, so other upload
names), so ComfyUI's cache never serves one from another; one warm-up edit per server first. The
last line is ``edits_per_min_1=A edits_per_min_2=B speedup_2=C dispatch_overhead=D``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import common  # first: it prepares the process and puts scripts/ and tests/ on sys.path

import batch_edit  # noqa: E402  (scripts/)
from comfy_client import Server, api_prompt  # noqa: E402
from edit_manifest import read_manifest  # noqa: E402
from harness import comfyui, model_files, servers  # noqa: E402
from harness.edit_manifests import write_pie_bench  # noqa: E402  (the tests' synthetic manifest)
from workflow_api import apply_overrides, load_workflow  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8, help="edits per measurement (default 8)")
    parser.add_argument("--steps", type=int, default=4, help="inversion and sampling steps (default 4)")
    return parser.parse_args()


def rows_with_prefix(manifest: Path, prefix: str):
    rows, _ = read_manifest(manifest)
    for row in rows:
        row.id = f"{prefix}_{row.id}"
    return rows


def direct(server: Server, template: dict, targets: dict, rows) -> float:
    """Seconds to upload, queue, wait for and download every row on one server, no dispatcher."""
    start = time.perf_counter()
    client = uuid.uuid4().hex
    ids = []
    for row in rows:
        name = server.upload_image(f"batch_edit_{row.id}{row.image.suffix}", row.image.read_bytes())
        ids.append(server.post_prompt(batch_edit.fill(template, targets, row, name), client))
    for prompt_id in ids:
        for entry in batch_edit.output_images(server.wait(prompt_id, 600)):
            server.image(entry)
    return time.perf_counter() - start


def dispatched(urls: list[Server], template: dict, targets: dict, rows, out: Path) -> float:
    start = time.perf_counter()
    status = batch_edit.run(rows, [], urls, template, targets, out, per_server=2, timeout=600)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"batch_edit failed; see {out / 'errors.jsonl'}")
    return seconds


def main() -> None:
    args = parse_args()
    root, reason = comfyui.find_comfyui()
    if root is None:
        raise SystemExit(f"bench/batch_edit.py: {reason}")
    checkpoint = model_files.make_sd15_checkpoint(model_files.sd15_checkpoint_path())
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    running = []
    try:
        for i in range(2):
            base = servers.make_base(work / f"server{i}", [checkpoint])
            server = servers.start_server(root, base, threads=1)
            if len(cores) >= 2:
                os.sched_setaffinity(server.process.pid, {cores[i]})
            running.append(server)
        for server in running:
            servers.wait_ready(server)
        clients = [Server(s.url, timeout=60) for s in running]
        template = api_prompt(load_workflow(batch_edit.DEFAULT_WORKFLOW), clients[0].json("/object_info"))
        apply_overrides(template, [f"ckpt_name={checkpoint.name}", f"steps={args.steps}"])
        targets = batch_edit.field_targets(template, [])
        manifest = write_pie_bench(work / "pie", good=args.rows, bad=False)
        for i, client in enumerate(clients):  # warm-up: loads the checkpoint on each server
            direct(client, template, targets, rows_with_prefix(manifest, f"warm{i}")[:1])
        seconds_direct = direct(clients[0], template, targets, rows_with_prefix(manifest, "direct"))
        seconds_1 = dispatched(clients[:1], template, targets, rows_with_prefix(manifest, "one"), work / "one")
        seconds_2 = dispatched(clients, template, targets, rows_with_prefix(manifest, "two"), work / "two")
    finally:
        for server in running:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    per_min = lambda seconds: 60 * args.rows / seconds  # noqa: E731
    print(f"{args.rows} edits of 64², {args.steps} steps, tiny SD1.5, servers on {min(len(cores), 2) or '?'} core(s)")
    print(f"direct, 1 server:       {seconds_direct:7.2f} s  {per_min(seconds_direct):6.1f} edits/min")
    print(f"batch_edit, 1 server:   {seconds_1:7.2f} s  {per_min(seconds_1):6.1f} edits/min")
    print(f"batch_edit, 2 servers:  {seconds_2:7.2f} s  {per_min(seconds_2):6.1f} edits/min")
    print(f"edits_per_min_1={per_min(seconds_1):.1f} edits_per_min_2={per_min(seconds_2):.1f} "
          f"speedup_2={seconds_1 / seconds_2:.2f} dispatch_overhead={seconds_1 / seconds_direct - 1:+.3f}")


if __name__ == "__main__":
    main()
