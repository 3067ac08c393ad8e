"""Every bad argument of the command-line tools ends them with one line that names the argument,
and exit status 2, before anything slow starts: ComfyUI is unreachable here (--comfyui points
nowhere), so a check that came after ComfyUI's start would fail with "ComfyUI not found" instead.
No ComfyUI, torch or venv is needed; the shell wrappers are refused before they build anything."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from harness import pack

SCRIPTS = pack.ROOT / "scripts"
WORKFLOW = pack.ROOT / "example_workflows" / "p2p_replace.json"
NOT_STARTED = "ComfyUI not found"


def write_safetensors(path: Path) -> Path:
    """A valid one-tensor safetensors file, written by hand (no torch needed)."""
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    return path


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Good and bad inputs, in a folder whose name has a space and a non-ASCII letter."""
    folder = tmp_path / "my files ü"
    folder.mkdir()
    (folder / "a file").write_text("not a folder")
    (folder / "corrupt.json").write_text('{"nodes": [')
    (folder / "list.json").write_text("[1, 2]")
    (folder / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n")
    ui = json.loads(WORKFLOW.read_text())
    ui["links"] = [[*link[:1], 999, *link[2:]] if i == 0 else link for i, link in enumerate(ui["links"])]
    (folder / "missing_node_ui.json").write_text(json.dumps(ui))
    (folder / "missing_node_api.json").write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {"images": ["7", 0]}}}))
    (folder / "a folder.json").mkdir()
    (folder / "pickle.safetensors").write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00model" + b"\0" * 64)
    (folder / "text.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")
    (folder / "model.txt").write_text("weights")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "no images").mkdir()
    return {"dir": folder, "model": write_safetensors(folder / "model ü.safetensors"), **{
        name: folder / name for name in ("a file", "corrupt.json", "list.json", "binary.json", "missing_node_ui.json",
                                         "missing_node_api.json", "a folder.json", "pickle.safetensors",
                                         "text.safetensors", "model.txt", "broken.png", "no images")}}


def run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    env["PROMPT_EDIT_NO_COMFYUI"] = "1"  # no ComfyUI is looked up but --comfyui's
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def python_script(script: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    comfyui = [] if script == "report.py" else ["--comfyui", str(cwd / "no ComfyUI")]
    return run_script([sys.executable, str(SCRIPTS / script), *map(str, args), *comfyui], cwd)


def assert_refused(result: subprocess.CompletedProcess, *expected: str) -> None:
    message = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "\n" not in message, f"not one line: {message}"
    assert NOT_STARTED not in message and "Traceback" not in message
    for text in expected:
        assert text in message, message


# (arguments, what the message must hold); "{name}" is replaced by the path of files[name]
RUN_WORKFLOW_CASES = {
    "missing workflow": (["{dir}/nö such.json"], ["workflow", "no file", "nö such.json"]),
    "folder as workflow": (["{a folder.json}"], ["workflow", "is a folder"]),
    "very long name": (["x" * 300 + ".json"], ["workflow", "give a shorter path"]),
    "corrupt JSON": (["{corrupt.json}"], ["workflow", "cannot read it as JSON"]),
    "binary file": (["{binary.json}"], ["workflow", "cannot read it as JSON"]),
    "not a workflow": (["{list.json}"], ["workflow", "not a workflow"]),
    "UI link from a missing node": (["{missing_node_ui.json}"], ["node 999", "not in the workflow"]),
    "API input from a missing node": (["{missing_node_api.json}"], ["'images' comes from node 7", "not in the workflow"]),
    "--out is a file": ([str(WORKFLOW), "--out", "{a file}"], ["--out", "is a file"]),
    "--out under a file": ([str(WORKFLOW), "--out", "{a file}/images"], ["--out", "cannot be made"]),
    "--checkpoint is a pickle": ([str(WORKFLOW), "--checkpoint", "{pickle.safetensors}"], ["--checkpoint", "not a valid safetensors"]),
    "--checkpoint is an LFS pointer": ([str(WORKFLOW), "--checkpoint", "{text.safetensors}"], ["--checkpoint", "not a valid safetensors"]),
    "--checkpoint of another kind": ([str(WORKFLOW), "--checkpoint", "{model.txt}"], ["--checkpoint", "not a model file"]),
    "--checkpoint is a folder": ([str(WORKFLOW), "--checkpoint", "{dir}"], ["--checkpoint", "is a folder"]),
    "--checkpoint missing": ([str(WORKFLOW), "--checkpoint", "{dir}/gone.safetensors"], ["--checkpoint", "no file"]),
    "--set nan": ([str(WORKFLOW), "--set", "cfg=nan"], ["--set 'cfg=nan'", "not a finite number"]),
    "--set -inf": ([str(WORKFLOW), "--set", "cfg=-inf"], ["--set 'cfg=-inf'", "not a finite number"]),
    "--set without =": ([str(WORKFLOW), "--set", "steps"], ["--set 'steps'", "NAME=VALUE"]),
    "--input-dir missing": ([str(WORKFLOW), "--input-dir", "{dir}/nowhere"], ["--input-dir", "existing folder"]),
    "--models-dir is a file": ([str(WORKFLOW), "--models-dir", "{a file}"], ["--models-dir", "not a folder"]),
}


def fill(args: list[str], files: dict[str, Path]) -> list[str]:
    for name, path in files.items():
        args = [arg.replace("{" + name + "}", str(path)) for arg in args]
    return args


@pytest.mark.parametrize("case", RUN_WORKFLOW_CASES)
def test_run_workflow_refuses_bad_arguments_before_comfyui_starts(case, files, tmp_path):
    args, expected = RUN_WORKFLOW_CASES[case]
    assert_refused(python_script("run_workflow.py", *fill(args, files), cwd=tmp_path), *expected)


def test_good_arguments_pass_the_checks_and_leave_no_folder_behind(files, tmp_path):
    out = tmp_path / "new" / "out ü"
    ok = python_script("run_workflow.py", WORKFLOW, "--out", out, "--checkpoint", files["model"],
                       "--set", "steps=-3", "--check", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert not (tmp_path / "new").exists()  # made to test it, removed: nothing was written
    # without --check the same arguments go on to start ComfyUI (unreachable here)
    started = python_script("run_workflow.py", WORKFLOW, "--out", out, "--checkpoint", files["model"], cwd=tmp_path)
    assert started.returncode != 0 and NOT_STARTED in started.stderr
    assert not (tmp_path / "new").exists()


TRAIN = ["--checkpoint", "{model}", "--images", "{dir}/img.png", "--prompt", "a cat", "--out", "{dir}/vae.safetensors"]
TRAIN_CASES = {
    "--steps nan": (["--steps", "nan"], ["--steps", "not an integer"]),
    "--guidance inf": (["--guidance", "inf"], ["--guidance", "not a finite number"]),
    "--learning-rate negative": (["--learning-rate", "-0.1"], ["--learning-rate", "too small"]),
    "--iterations 0": (["--iterations", "0"], ["--iterations", "too small"]),
    "--seed negative": (["--seed", "-1"], ["--seed", "too small"]),
    "--out exists": (["--out", "{model}"], ["--out", "exists", "--overwrite"]),
    "--out is a folder": (["--out", "{no images}"], ["--out", "is a folder"]),
    "--out not safetensors": (["--out", "{dir}/vae.pt"], ["--out", "must end in .safetensors"]),
    "--out under a file": (["--out", "{a file}/vae.safetensors"], ["--out", "cannot be made"]),
    "--checkpoint not safetensors": (["--checkpoint", "{pickle.safetensors}"], ["--checkpoint", "not a valid safetensors"]),
    "--images missing": (["--images", "{dir}/gone.png"], ["--images", "no file"]),
    "--images folder without images": (["--images", "{no images}"], ["--images", "no image files"]),
    "--images not an image": (["--images", "{broken.png}"], ["--images", "cannot read"]),
    "--clip-vision not safetensors": (["--edit-prompt", "a dog", "--clip-vision", "{text.safetensors}"],
                                      ["--clip-vision", "not a valid safetensors"]),
    "--edit-prompt empty": (["--edit-prompt", " ", "--clip-vision", "{model}"], ["--edit-prompt", "empty"]),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_embedding_vae_refuses_bad_arguments_before_comfyui_starts(case, files, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(files["dir"] / "img.png")
    args, expected = TRAIN_CASES[case]
    assert_refused(python_script("train_embedding_vae.py", *fill(TRAIN + args, files), cwd=tmp_path), *expected)


EVALUATE = ["--reference", "{dir}/img.png", "--images", "{dir}/img.png"]
EVALUATE_CASES = {
    "--reference missing": (["--reference", "{dir}/gone.png"], ["--reference", "no file"]),
    "--images not an image": (["--images", "{broken.png}"], ["--images", "cannot read"]),
    "--lpips not safetensors": (["--lpips", "{pickle.safetensors}"], ["--lpips", "not a valid safetensors"]),
    "--lpips of another kind": (["--lpips", "{model.txt}"], ["--lpips", "not a model file"]),
    "--json is a folder": (["--json", "{no images}"], ["--json", "is a folder"]),
    "--json under a file": (["--json", "{a file}/m.json"], ["--json", "cannot be made"]),
    "--classes one class": (["--clip-vision", "{model}", "--checkpoint", "{model}", "--classes", "cat"],
                            ["--classes", "at least one other"]),
    "--prompt without CLIP": (["--prompt", "a dog"], ["--prompt needs --clip-vision"]),
}


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_refuses_bad_arguments_before_loading(case, files, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(files["dir"] / "img.png")
    args, expected = EVALUATE_CASES[case]
    assert_refused(python_script("evaluate.py", *fill(EVALUATE + args, files), cwd=tmp_path), *expected)


def test_report_checks_its_arguments(files, tmp_path):
    assert_refused(python_script("report.py", "--out", files["a file"], "--check", cwd=tmp_path), "--out", "is a file")
    assert_refused(python_script("report.py", "--lpips", files["text.safetensors"], "--check", cwd=tmp_path),
                   "--lpips", "not a valid safetensors")
    assert python_script("report.py", "--out", tmp_path / "r", "--check", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_shell_wrappers_refuse_bad_arguments_before_any_set_up(files, tmp_path):
    """edit.sh, bench.sh, test.sh: refused before a venv is built or a ComfyUI fetched. A fake
    PACK_ROOT is impossible here (env.sh finds it), so only refusals are run: nothing is built."""
    def shell(script: str, *args: str | Path) -> subprocess.CompletedProcess:
        return run_script([shutil.which("bash"), str(SCRIPTS / script), *map(str, args)], tmp_path)

    assert_refused(shell("edit.sh"), "--checkpoint is missing")
    assert_refused(shell("edit.sh", "--host"), "--host needs a ComfyUI version")
    assert_refused(shell("edit.sh", "--checkpoint", files["pickle.safetensors"]), "--checkpoint", "not a valid safetensors")
    assert_refused(shell("edit.sh", files["corrupt.json"], "--checkpoint", files["model"]), "cannot read it as JSON")
    # paths are taken relative to where the script runs (not the pack's folder)
    local = shutil.copy(files["model"], tmp_path / "local.safetensors")
    assert_refused(shell("edit.sh", "--checkpoint", Path(local).name, "--set", "cfg=inf"), "--set 'cfg=inf'")
    # arguments fine, host unknown: refused before any venv is built
    assert_refused(shell("edit.sh", "--checkpoint", files["model"], "--host", "7.7.7"), "--host 7.7.7: not a ComfyUI version")
    assert_refused(shell("bench.sh", "--ful"), "unknown argument '--ful'")
    assert_refused(shell("test.sh", "--host", "7.7.7"), "--host 7.7.7", "0.3.64 0.33.0")
    assert_refused(shell("report.sh", "--out", files["a file"]), "--out", "is a file")
