"""The command-line tools against a real ComfyUI: the headless workflow runner (also when a run
fails or is interrupted) and the evaluator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from harness import comfyui, model_files, pack

pytestmark = pytest.mark.comfy
SCRIPTS = pack.ROOT / "scripts"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    root, _ = comfyui.find_comfyui()
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args, "--comfyui", str(root)],
                          capture_output=True, text=True, timeout=600, check=False)


def test_the_runner_executes_an_example_workflow_headlessly(sd15_checkpoint, tmp_path):
    result = run("run_workflow.py", str(pack.ROOT / "example_workflows" / "p2p_replace.json"), "--out", str(tmp_path),
                 "--checkpoint", str(model_files.sd15_checkpoint_path()), "--set", "steps=2",
                 "--set", "width=64", "--set", "height=64", "--cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    images = sorted(tmp_path.glob("*.png"))
    assert len(images) >= 2 and f"image(s) in {tmp_path.resolve()}" in result.stdout
    with Image.open(images[0]) as image:
        assert image.size == (64, 64)


def test_the_runner_names_unknown_nodes_and_bad_overrides(comfy_nodes, tmp_path):
    workflow = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    (tmp_path / "bad.json").write_text(json.dumps(workflow))
    result = run("run_workflow.py", str(tmp_path / "bad.json"), "--cpu")
    assert result.returncode != 0 and "NoSuchNode" in result.stderr
    result = run("run_workflow.py", str(pack.ROOT / "example_workflows" / "p2p_replace.json"), "--set", "nonsense=1", "--cpu")
    assert result.returncode != 0 and "no node of the workflow has a widget input named 'nonsense'" in result.stderr


def run_in(tmp_path, script: str, *args: str) -> subprocess.Popen:
    """The script with its temporary folder inside tmp_path (TMPDIR), so that what it leaves there is
    its own; stdout and stderr go to files."""
    root, _ = comfyui.find_comfyui()
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch_parent)}
    return subprocess.Popen([sys.executable, str(SCRIPTS / script), *args, "--comfyui", str(root)], env=env,
                            stdout=open(tmp_path / "stdout", "w"), stderr=open(tmp_path / "stderr", "w"))


def save_then(tail: dict) -> dict:
    """An API prompt that saves a 64² image first (nodes 1, 2), then runs `tail` (ids from 3)."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 255}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first"}},
            **tail}


def test_a_failed_run_keeps_the_images_it_saved_and_removes_its_scratch_folder(comfy_nodes, tmp_path):
    # node 3 loads a file that is a valid safetensors file but no checkpoint: it fails when it runs
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "not_a_model.safetensors"))
    workflow = save_then({
        "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["3", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "never"}}})
    (tmp_path / "fails.json").write_text(json.dumps(workflow))
    out = tmp_path / "out"
    out.mkdir()
    (out / "partial_first_00001_.png").write_bytes(b"an earlier result")  # never overwritten
    process = run_in(tmp_path, "run_workflow.py", str(tmp_path / "fails.json"), "--out", str(out),
                     "--checkpoint", str(tmp_path / "not_a_model.safetensors"), "--cpu")
    assert process.wait(timeout=300) == 1
    stderr = (tmp_path / "stderr").read_text()
    assert "CheckpointLoaderSimple (node 3)" in stderr
    assert f"the 1 image(s) saved before it stopped are in {out.resolve()}" in stderr
    assert (out / "partial_first_00001_.png").read_bytes() == b"an earlier result"
    with Image.open(out / "partial_first_00001__1.png") as image:
        assert image.size == (64, 64) and image.getpixel((0, 0)) == (0, 0, 255)
    assert not list(out.glob("*never*"))
    assert list((tmp_path / "tmp").iterdir()) == []  # no run_workflow_XXXX left


def test_an_interrupted_run_keeps_the_images_it_saved_and_removes_its_scratch_folder(comfy_nodes, tmp_path):
    # After the save, a chain of lanczos resizes: many seconds of work (a run that ignored Ctrl-C
    # would finish it and save "never"); Ctrl-C presses ComfyUI's Cancel: it stops before the next node.
    resizes = {str(i): {"class_type": "ImageScale", "inputs": {
        "image": [str(i - 1), 0], "upscale_method": "lanczos", "width": 1024 + 512 * (i % 2), "height": 1024, "crop": "disabled"}}
        for i in range(4, 40)}
    workflow = save_then({
        "3": {"class_type": "EmptyImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1, "color": 0}},
        **resizes, "40": {"class_type": "SaveImage", "inputs": {"images": ["39", 0], "filename_prefix": "never"}}})
    (tmp_path / "slow.json").write_text(json.dumps(workflow))
    out = tmp_path / "out"
    process = run_in(tmp_path, "run_workflow.py", str(tmp_path / "slow.json"), "--out", str(out), "--cpu")
    deadline = time.monotonic() + 120
    while not list((tmp_path / "tmp").glob("run_workflow_*/output/first*.png")):
        assert process.poll() is None, (tmp_path / "stderr").read_text()[-2000:]
        assert time.monotonic() < deadline, "the first image was never saved"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130, (tmp_path / "stderr").read_text()[-2000:]
    stderr = (tmp_path / "stderr").read_text()
    assert "SIGINT: stopping the run" in stderr and f"the 1 image(s) saved before it stopped are in {out.resolve()}" in stderr
    assert [path.name for path in out.iterdir()] == ["partial_first_00001_.png"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_value_the_node_refuses_names_the_set_option(sd15_checkpoint, tmp_path):
    result = run("run_workflow.py", str(pack.ROOT / "example_workflows" / "p2p_replace.json"), "--out", str(tmp_path / "out"),
                 "--checkpoint", str(model_files.sd15_checkpoint_path()), "--set", "steps=-3", "--cpu")
    assert result.returncode == 1
    assert "Value -3 smaller than min of 1: steps" in result.stderr
    assert result.stderr.rstrip().endswith("--set steps=-3: give a value the node accepts (above)")
    assert not (tmp_path / "out").exists()  # made for the run, removed: nothing was written
