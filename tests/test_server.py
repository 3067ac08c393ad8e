"""The queue script against a real ComfyUI server on loopback, with the pack installed in it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from harness import comfyui, pack

pytestmark = pytest.mark.comfy
SCRIPT = pack.ROOT / "scripts" / "queue_variations.py"


def queue(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900, check=False)


def test_queue_script_runs_seeds_and_scales_and_summarises(comfy_server, tmp_path):
    url, checkpoint, _ = comfy_server
    reference = tmp_path / "reference.png"
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(reference)
    out = tmp_path / "runs"
    result = queue(str(pack.ROOT / "example_workflows" / "variations_token_noise.json"), "--server", url,
                   "--count", "2", "--scales", "0,0.5", "--out", str(out), "--reference", str(reference),
                   "--set", f"ckpt_name={checkpoint}", "--set", "steps=2", "--set", "width=64", "--set", "height=64",
                   "--set", "count=2", "--timeout", "300")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"scale0", "scale0.5"}
    for row in summary.values():
        assert row["images"] == 4  # 2 seeds x 2 variations per run
        assert 0 < row["psnr_db"] < 100 and -1 <= row["ssim"] <= 1
    assert len(list(out.glob("*.png"))) == 8 and (out / "summary.md").is_file()


def test_queue_script_fails_cleanly(comfy_server, tmp_path):
    url, _, _ = comfy_server
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    result = queue(str(unknown), "--server", url, "--out", str(tmp_path / "a"))
    assert result.returncode != 0 and "does not know the node types ['NoSuchNode']" in result.stderr
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".queue_*"))
    result = queue(str(unknown), "--server", f"http://127.0.0.1:{comfyui.free_port()}", "--out", str(tmp_path / "b"),
                   "--timeout", "5")
    assert result.returncode != 0 and "cannot reach the ComfyUI server" in result.stderr
    assert not (tmp_path / "b").exists()


def test_the_server_serves_the_node_help_pages_where_the_frontend_looks(comfy_server):
    import urllib.request

    url, _, _ = comfy_server
    page = pack.ROOT / "web" / "docs" / "PromptEditInvertImage.md"
    with urllib.request.urlopen(f"{url}/extensions/{pack.PACK}/docs/PromptEditInvertImage.md", timeout=30) as response:
        assert response.read().decode() == page.read_text()


def _history_size(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{url}/history", timeout=30) as response:
        return len(json.loads(response.read()))


def test_queue_script_checks_its_arguments_before_queuing(comfy_server, tmp_path):
    url, checkpoint, _ = comfy_server
    workflow = str(pack.ROOT / "example_workflows" / "variations_token_noise.json")
    before = _history_size(url)
    result = queue(workflow, "--server", url, "--out", str(tmp_path / "missing" / "runs"), "--set", f"ckpt_name={checkpoint}")
    assert result.returncode != 0 and f"the folder {tmp_path / 'missing'} does not exist" in result.stderr
    not_an_image = tmp_path / "reference.png"
    not_an_image.write_text("not a png")
    result = queue(workflow, "--server", url, "--out", str(tmp_path / "a"), "--reference", str(not_an_image))
    assert result.returncode != 0 and "--reference" in result.stderr
    result = queue(workflow, "--server", url, "--out", str(tmp_path / "b"), "--reference", str(tmp_path / "nothing.png"))
    assert result.returncode != 0 and "--reference" in result.stderr and "does not exist" in result.stderr
    assert _history_size(url) == before, "a run was queued before the arguments were checked"
    assert not list(tmp_path.glob(".queue_*"))


def test_an_interrupted_run_names_the_node_it_stopped_in(comfy_server, tmp_path):
    import time
    import urllib.request

    url, checkpoint, _ = comfy_server
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(pack.ROOT / "example_workflows" / "variations_token_noise.json"),
         "--server", url, "--count", "1", "--out", str(tmp_path / "runs"), "--set", f"ckpt_name={checkpoint}",
         "--set", "steps=400", "--set", "width=64", "--set", "height=64", "--set", "count=1", "--timeout", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:  # interrupt once the sampler runs (a progress value is reported)
        with urllib.request.urlopen(f"{url}/queue", timeout=30) as response:
            running = json.loads(response.read())["queue_running"]
        if running or process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(3)
    urllib.request.urlopen(urllib.request.Request(f"{url}/interrupt", data=b"{}", method="POST"), timeout=30).read()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "the run was interrupted in " in stderr and "(node " in stderr and "None" not in stderr, stderr[-2000:]
    assert not (tmp_path / "runs").exists()
