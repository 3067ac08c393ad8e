"""scripts/batch_edit.py against two real ComfyUI servers on loopback (the tiny SD1.5 checkpoint,
2 steps, 64x64): a synthetic manifest in PIE-Bench's format is edited row by row over both, a
server killed mid-run loses nothing, an interrupted run resumes, bad rows are reported.

The servers are started once for the module (one CPU thread each); the failover test kills one of
them and so runs last."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import comfyui, model_files, pack, servers
from harness.edit_manifests import SIZE, write_pie_bench

pytestmark = pytest.mark.comfy
SCRIPT = pack.ROOT / "scripts" / "batch_edit.py"
@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    root, reason = comfyui.find_comfyui()
    if root is None:
        pytest.skip(reason)
    checkpoint = model_files.make_sd15_checkpoint(model_files.sd15_checkpoint_path())
    started = []
    try:
        for name in ("a", "b"):
            base = servers.make_base(tmp_path_factory.mktemp(f"batch_server_{name}"), [checkpoint])
            started.append(servers.start_server(root, base, threads=1))
        for server in started:
            servers.wait_ready(server)
        yield started, checkpoint.name
    finally:
        for server in started:
            server.stop()


def command(manifest: Path, out: Path, urls: list[str], checkpoint: str, *extra: str) -> list[str]:
    args = [sys.executable, str(SCRIPT), str(manifest), "--out", str(out),
            "--set", f"ckpt_name={checkpoint}", "--set", "steps=2", "--timeout", "300", *extra]
    for url in urls:
        args += ["--server", url]
    return args


def batch(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, **kwargs), capture_output=True, text=True, timeout=600, check=False)


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def pie_run(two_servers, tmp_path_factory):
    """(manifest, out folder, the run) of the synthetic PIE-Bench manifest over both servers."""
    (a, b), checkpoint = two_servers
    folder = tmp_path_factory.mktemp("pie_run")
    manifest = write_pie_bench(folder / "pie")
    return manifest, folder / "out", batch(manifest, folder / "out", [a.url, b.url], checkpoint, "--metrics")


def test_every_row_is_edited_over_both_servers_as_if_alone_and_bad_rows_are_reported(two_servers, pie_run, tmp_path):
    (a, b), checkpoint = two_servers
    manifest, out, result = pie_run
    assert result.returncode == 1, result.stderr[-3000:]  # the bad rows are not done
    done = results(out)
    assert sorted(r["id"] for r in done) == [f"0000000000{i:02d}" for i in range(8)]
    assert {r["server"] for r in done} == {a.url, b.url}, "the jobs were not spread over both servers"
    for record in done:
        edit = pixels(out / f"{record['id']}.png")
        assert edit.shape == (SIZE, SIZE, 3) and record["outputs"][-1] == f"{record['id']}.png"
        assert len(record["outputs"]) == 2  # the direct inversion's reconstruction, then the edit
        assert record["seconds"] > 0 and record["edit_type"] in ("0", "1")
    errors = {e["id"]: e["error"] for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert set(errors) == {"100000000000", "100000000001", "100000000002"}
    assert "does not exist" in errors["100000000000"]
    assert "cannot be aligned" in errors["100000000001"]
    assert errors["100000000002"].startswith("mask:")

    # --metrics with no models given: the background metrics of every row, in PIE-Bench's table
    assert "no --dino model" in result.stderr
    assert all(set(r["metrics"]) == {"psnr_unedit_part", "mse_unedit_part", "ssim_unedit_part"} for r in done)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["0", "1", "overall"] and summary["overall"]["rows"] == 8
    assert summary["overall"]["psnr_unedit_part"] == pytest.approx(np.mean([r["metrics"]["psnr_unedit_part"] for r in done]))
    assert (out / "summary.md").read_text().startswith("| Edit type | Rows | Structure Distance")

    # one row alone on the server that did not run it in the batch (same workflow, same seed)
    record = done[0]
    other = b.url if record["server"] == a.url else a.url
    entry = json.loads(manifest.read_text())[record["id"]]
    alone_manifest = tmp_path / "alone.jsonl"
    alone_manifest.write_text(json.dumps({
        "id": "alone", "image": str(manifest.parent / "annotation_images" / entry["image_path"]),
        "source_prompt": entry["original_prompt"], "target_prompt": entry["editing_prompt"]}) + "\n")
    alone = batch(alone_manifest, tmp_path / "alone", [other], checkpoint)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert np.array_equal(pixels(tmp_path / "alone" / "alone.png"), pixels(out / f"{record['id']}.png"))
    # the edit differs from its reconstruction (the prompts reached the P2P node)
    assert not np.array_equal(pixels(out / f"{record['id']}_0.png"), pixels(out / f"{record['id']}.png"))


def wait_for_results(out: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    path = out / "results.jsonl"
    while not (path.is_file() and len(path.read_text().splitlines()) >= count):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no results in time"
        time.sleep(0.2)


def test_an_interrupted_run_resumes_without_redoing_finished_rows(two_servers, tmp_path):
    (a, b), checkpoint = two_servers
    manifest = write_pie_bench(tmp_path / "pie", good=6, bad=False)
    out = tmp_path / "out"
    process = subprocess.Popen(command(manifest, out, [a.url, b.url], checkpoint, "--per-server", "1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # a shell's background job inherits SIGINT ignored; Ctrl-C is what is tested
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_results(out, 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    first = {r["id"]: r for r in results(out)}
    assert 2 <= len(first) < 6 and "run the same command again" in stderr
    before = {row_id: (out / f"{row_id}.png").stat().st_mtime_ns for row_id in first}
    result = batch(manifest, out, [a.url, b.url], checkpoint)
    assert result.returncode == 0, result.stderr[-3000:]
    ids = [r["id"] for r in results(out)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6  # every row once
    assert {row_id: (out / f"{row_id}.png").stat().st_mtime_ns for row_id in first} == before
    assert not list(out.glob(".*.part"))


def test_bad_arguments_are_refused_before_anything_runs(two_servers, tmp_path):
    (a, _), checkpoint = two_servers
    manifest = write_pie_bench(tmp_path / "pie", good=1, bad=False)
    dead = f"http://127.0.0.1:{comfyui.free_port()}"
    result = batch(manifest, tmp_path / "out", [a.url, dead], checkpoint)
    assert result.returncode != 0 and f"no answer from {dead}" in result.stderr
    assert not (tmp_path / "out").exists()
    result = batch(manifest, tmp_path / "out", [a.url], checkpoint, "--map", "image=99.image")
    assert result.returncode != 0 and "no node '99'" in result.stderr


def test_on_a_local_ray_cluster_two_actors_own_the_servers_with_the_same_results(two_servers, pie_run, tmp_path):
    pytest.importorskip("ray", reason='Ray is the optional extra: pip install ".[distributed]" (requirements-test.txt has it)')
    _, checkpoint = two_servers
    manifest, expected, _ = pie_run
    root, _ = comfyui.find_comfyui()
    custom_nodes = tmp_path / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / "comfyui_prompt_edit").symlink_to(pack.ROOT, target_is_directory=True)
    models = servers.make_base(tmp_path / "base", [model_files.sd15_checkpoint_path()]) / "models"
    out = tmp_path / "out"
    result = subprocess.run(command(manifest, out, [], checkpoint, "--ray", "local", "--ray-cpu", "--ray-actors", "2",
                                    "--comfyui", str(root), "--ray-custom-nodes", str(custom_nodes),
                                    "--ray-models", str(models)),
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 1, result.stderr[-3000:]  # the manifest's bad rows
    assert "Ray: 2 ComfyUI server(s)" in result.stderr
    done = results(out)
    assert len({r["server"] for r in done}) == 2 and len(done) == 8
    for record in done:
        assert np.array_equal(pixels(out / f"{record['id']}.png"), pixels(expected / f"{record['id']}.png")), record
    # the actors took their servers with them
    for url in {r["server"] for r in done}:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/queue", timeout=5)


def test_a_server_killed_mid_run_loses_nothing(two_servers, tmp_path):
    (a, b), checkpoint = two_servers
    manifest = write_pie_bench(tmp_path / "pie", good=6, bad=False)
    out = tmp_path / "out"
    process = subprocess.Popen(command(manifest, out, [a.url, b.url], checkpoint, "--per-server", "1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_results(out, 1, process)
    b.stop()
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert f"{b.url} stopped answering" in stderr
    done = results(out)
    assert sorted(r["id"] for r in done) == [f"0000000000{i:02d}" for i in range(6)]
    assert all((out / f"{r['id']}.png").is_file() for r in done)
