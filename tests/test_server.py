"""The queue script against a real ComfyUI server on loopback, with the pack installed in it."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import comfy_harness as harness

pytestmark = pytest.mark.comfy
SCRIPT = harness.ROOT / "scripts" / "queue_variations.py"
STARTUP_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def comfy_server(tmp_path_factory):
    """ComfyUI's own main.py on 127.0.0.1 (CPU), with a base directory whose custom_nodes/ holds
    this pack and whose models/checkpoints/ holds the test checkpoint. Stopped after the module."""
    root, reason = harness.find_comfyui()
    if root is None:
        pytest.skip(reason)
    if importlib.util.find_spec("comfyui_frontend_package") is None:
        pytest.skip("the ComfyUI server needs comfyui-frontend-package (pip install -r requirements-test.txt)")
    checkpoint = harness.make_sd15_checkpoint(harness.sd15_checkpoint_path())
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui_prompt_edit").symlink_to(harness.ROOT, target_is_directory=True)
    (base / "models").mkdir()
    (base / "models" / "checkpoints").symlink_to(checkpoint.parent, target_is_directory=True)
    port = free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen([sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--cpu",
                                "--base-directory", str(base), "--disable-auto-launch"],
                               cwd=root, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/object_info/PromptEditStochasticEmbeddings", timeout=5) as r:
                    if json.loads(r.read()):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the ComfyUI server did not start:\n{(base / 'server.log').read_text()[-4000:]}")
            time.sleep(0.5)
        yield url, checkpoint.name, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def queue(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900, check=False)


def test_queue_script_runs_seeds_and_scales_and_summarises(comfy_server, tmp_path):
    url, checkpoint, _ = comfy_server
    reference = tmp_path / "reference.png"
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(reference)
    out = tmp_path / "runs"
    result = queue(str(harness.ROOT / "example_workflows" / "variations_token_noise.json"), "--server", url,
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
    result = queue(str(unknown), "--server", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "b"),
                   "--timeout", "5")
    assert result.returncode != 0 and "cannot reach the ComfyUI server" in result.stderr
    assert not (tmp_path / "b").exists()
