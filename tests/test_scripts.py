"""The command-line tools against a real ComfyUI: the headless workflow runner and the evaluator."""

from __future__ import annotations

import json
import subprocess
import sys

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
