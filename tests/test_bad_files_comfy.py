"""Bad file names and damaged files through the nodes a user touches, a real ComfyUI server and the
training script (issue 20): names are refused before any node runs, a result is never lost, and a
damaged file is refused at load with a message naming the input (the pure side: test_bad_files.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness import comfyui, model_files, pack
from harness.inversion_runs import invert, node, reconstruct

pytestmark = pytest.mark.comfy

LONG_PREFIX = "p" * 230  # the name the probe lost a result with: it fits, the old temporary name did not


# -- through a real server -------------------------------------------------------------------------


def post(url: str, prompt: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def finished(url: str, prompt_id: str, timeout: float = 300) -> dict:
    """The history entry of ``prompt_id`` once it has run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}", timeout=30) as response:
            entry = json.loads(response.read()).get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.5)
    pytest.fail(f"prompt {prompt_id} did not finish in {timeout} s")


def photo_prompt(checkpoint: str) -> dict:
    """A checkpoint, two prompts and an empty 64x64 latent: what the saving nodes start from."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red square"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }


def save_inversion_prompt(checkpoint: str, prefix: str) -> dict:
    return {**photo_prompt(checkpoint),
            "5": {"class_type": "PromptEditInvertImage", "inputs": {
                "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["4", 0], "method": "ddim",
                "scheduler": "ddim_uniform", "steps": 2, "guidance": 7.5, "inner_steps": 0, "early_stop": 1e-5}},
            "6": {"class_type": "PromptEditSaveInversion", "inputs": {"inversion": ["5", 1], "filename_prefix": prefix}}}


def train_prompt(checkpoint: str, save_as: str) -> dict:
    return {**photo_prompt(checkpoint),
            "5": {"class_type": "PromptEditTrainEmbeddingVAE", "inputs": {
                "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["4", 0],
                "architecture": "token_mlp", "scheduler": "ddim_uniform", "steps": 2, "guidance": 7.5, "iterations": 2,
                "learning_rate": 1e-3, "kl_weight": 1e-4, "seed": 0, "save_as": save_as}},
            "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}}}  # an output, so that "5" is validated


@pytest.mark.parametrize("make,message", [
    (lambda c: save_inversion_prompt(c, "p" * 240), "filename_prefix: .* too long: with '_999999.safetensors' it makes a 259-byte"),
    (lambda c: save_inversion_prompt(c, "inv\x00ersion"), r"filename_prefix: .* control characters \('\\x00'\)"),
    (lambda c: save_inversion_prompt(c, "../outside"), "filename_prefix: .* without folders"),
    (lambda c: train_prompt(c, ".."), "save_as: '..' starts with '.'"),
    (lambda c: train_prompt(c, "."), "save_as: '.' starts with '.'"),
    (lambda c: train_prompt(c, "v" * 240), "save_as: .* too long"),
])
def test_the_server_refuses_a_bad_name_before_any_node_runs(comfy_server, make, message):
    url, checkpoint, _ = comfy_server
    status, answer = post(url, make(checkpoint))
    assert status == 400, answer
    details = " ".join(e["details"] for errors in answer["node_errors"].values() for e in errors["errors"])
    assert re.search(message, details), answer


def test_a_long_prefix_that_fits_saves_the_inversion_through_the_server(comfy_server):
    url, checkpoint, base = comfy_server
    status, answer = post(url, save_inversion_prompt(checkpoint, LONG_PREFIX))
    assert status == 200, answer
    entry = finished(url, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = [p.name for p in (base / "models" / "inversions").iterdir() if p.name.startswith(LONG_PREFIX)]
    assert saved == [f"{LONG_PREFIX}_00001.safetensors"]  # and no temporary file left beside it


def test_the_server_names_a_damaged_inversion_file(comfy_server, tmp_path):
    url, _, base = comfy_server
    folder = base / "models" / "inversions"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"unconds": torch.zeros(2)}, folder / "renamed_pickle.safetensors")
    status, answer = post(url, {"1": {"class_type": "PromptEditLoadInversion", "inputs": {"name": "renamed_pickle.safetensors"}},
                                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert status == 200, answer
    entry = finished(url, answer["prompt_id"])
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["exception_message"].startswith("name: ") and \
        "renamed_pickle.safetensors: not a readable safetensors file (it is a PyTorch pickle" in errors[0]["exception_message"], entry["status"]


# -- Save / Load / Apply Inversion -------------------------------------------------------------------


@pytest.fixture
def inversions(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "inversions", ([str(tmp_path)], {".safetensors"}))
    return tmp_path


@pytest.fixture
def direct(tiny_sd15, tiny_sd15_clip):
    """(model, positive, negative, noisy latent, direct Inversion) of a random photo."""
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    positive, negative, noisy, inversion = invert(tiny_sd15, tiny_sd15_clip, latent, "direct", steps=3)
    return tiny_sd15, positive, negative, noisy, inversion


def rewritten(path, change) -> None:
    """Rewrite the safetensors file ``path`` with ``change(tensors)`` applied (as a user's edit would)."""
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def test_save_inversion_refuses_a_bad_prefix_when_it_comes_through_a_link(direct, inversions):
    inversion = direct[-1]
    with pytest.raises(ValueError, match=r"filename_prefix: 'inv\\x00ersion' holds control characters"):
        node("PromptEditSaveInversion").save(inversion, "inv\x00ersion")
    with pytest.raises(ValueError, match="filename_prefix: '..' starts with '.'"):
        node("PromptEditSaveInversion").save(inversion, "..")
    assert list(inversions.iterdir()) == []


@pytest.mark.parametrize("change,message", [
    (lambda t: t.update({k: v.half() for k, v in t.items()}), "tensor '.*' is float16, expected float32"),
    (lambda t: t["noisy"].fill_(float("nan")), "tensor 'noisy' holds NaN"),
    (lambda t: t.update(sigmas=t["sigmas"].long()), "tensor 'sigmas' is int64"),
    (lambda t: t.update(noisy=t["noisy"][:, :, :4]), r"source has shape \[1, 4, 8, 8\], noisy \[1, 4, 4, 8\]"),
])
def test_load_inversion_names_a_damaged_file(direct, inversions, change, message):
    saved = node("PromptEditSaveInversion").save(direct[-1], "photo")["ui"]["text"][0]
    rewritten(inversions / saved, change)
    with pytest.raises(ValueError, match=rf"^name: .*{saved}: .*{message}.*save the inversion again"):
        node("PromptEditLoadInversion").load(saved)


def test_an_inversion_whose_latent_is_not_the_models_is_refused_before_sampling(direct, inversions):
    model, positive, negative, noisy, inversion = direct
    saved = node("PromptEditSaveInversion").save(inversion, "photo")["ui"]["text"][0]
    rewritten(inversions / saved, lambda t: t.update({k: t[k].repeat(1, 4, 1, 1) for k in ("noisy", "source", "pivots")}))
    _, sixteen = node("PromptEditLoadInversion").load(saved)  # consistent in itself, made for another model
    with pytest.raises(ValueError, match="inversion: the inversion's latent has 16 channels, this model's 4"):
        node("PromptEditApplyInversion").apply(model, sixteen)
    other_size = {"samples": torch.zeros(1, 4, 16, 16)}
    with pytest.raises(ValueError, match=r"the sampler's latent is \[4, 16, 16\], the inversion's \[4, 8, 8\]"):
        reconstruct(model, positive, negative, other_size, inversion, steps=3)


def test_a_null_text_inversion_for_another_text_encoder_is_refused_by_the_training(tiny_sd15, tiny_sd15_clip):
    latent = torch.zeros(1, 4, 8, 8)
    positive, negative, _, inversion = invert(tiny_sd15, tiny_sd15_clip, latent, "negative-prompt", steps=2)
    inversion.unconds = inversion.unconds[:, :, :16].contiguous()
    with pytest.raises(ValueError, match=r"inversion: its null texts are \[77, 16\] .* the negative's \[77, 32\]"), \
            torch.inference_mode():
        node("PromptEditTrainEmbeddingVAE").train(tiny_sd15, positive, negative, "token_mlp", "ddim_uniform", 2, 7.5, 2,
                                                  1e-3, 1e-4, 0, "", inversion=inversion)


# -- Train / Load Embedding VAE ----------------------------------------------------------------------


@pytest.fixture
def vae_folder(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embedding_vae", ([str(tmp_path)], {".safetensors"}))
    return tmp_path


def train(model, clip, iterations: int, save_as: str):
    with torch.inference_mode():
        return node("PromptEditTrainEmbeddingVAE").train(
            model, comfyui.encode(clip, "a red square"), comfyui.encode(clip, ""), "token_mlp", "ddim_uniform", 2, 7.5,
            iterations, 1e-3, 1e-4, 0, save_as, latent={"samples": torch.zeros(1, 4, 8, 8)})


@pytest.mark.parametrize("save_as,message", [
    ("..", "starts with '.'"), (".", "starts with '.'"), ("a/b", "without folders"), ("x" * 240, "too long"),
    ("vae\x00", "control characters"),
])
def test_a_training_node_refuses_a_bad_name_before_it_trains(tiny_sd15, tiny_sd15_clip, vae_folder, monkeypatch,
                                                             save_as, message):
    import comfyui_prompt_edit.nodes.embedding_vae as module

    monkeypatch.setattr(module, "photo_trajectories", lambda *a, **k: pytest.fail("the training started"))
    with pytest.raises(ValueError, match=rf"^save_as: .*{message}"):
        train(tiny_sd15, tiny_sd15_clip, 2, save_as)
    assert list(vae_folder.iterdir()) == []


def test_a_cancelled_retraining_leaves_the_finished_file_in_place(tiny_sd15, tiny_sd15_clip, vae_folder, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE

    train(tiny_sd15, tiny_sd15_clip, 3, "cat")
    finished_file = vae_folder / "cat.safetensors"
    before = finished_file.read_bytes()
    update_absolute = comfy.utils.ProgressBar.update_absolute

    def cancel_after_the_second_iteration(bar, value, total=None, preview=None):
        update_absolute(bar, value, total, preview)
        if bar.total == 1000 and value == 2:  # as the Cancel button does
            mm.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", cancel_after_the_second_iteration)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            train(tiny_sd15, tiny_sd15_clip, 1000, "cat")
    finally:
        mm.interrupt_current_processing(False)
    assert finished_file.read_bytes() == before  # the finished run's file, untouched
    assert TrainedEmbeddingVAE.load(finished_file).steps_trained == 3
    assert TrainedEmbeddingVAE.load(vae_folder / "cat.cancelled.safetensors").steps_trained == 2
    assert sorted(p.name for p in vae_folder.iterdir()) == ["cat.cancelled.safetensors", "cat.safetensors"]


@pytest.mark.parametrize("change,message", [
    (lambda t: t["time.0.weight"].fill_(float("nan")), "tensor 'time.0.weight' holds NaN"),
    (lambda t: t.update({"time.0.bias": t["time.0.bias"].long()}), "tensor 'time.0.bias' is int64"),
])
def test_load_embedding_vae_names_a_damaged_file(vae_folder, change, message):
    from comfyui_prompt_edit.vae_embed.checkpoint import TrainedEmbeddingVAE
    from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig

    path = vae_folder / "v.safetensors"
    TrainedEmbeddingVAE(EmbeddingVAE(EmbeddingVAEConfig("token_mlp", 77, 32, latent=4, hidden=16)), "null-text").save(path)
    rewritten(path, change)
    with pytest.raises(ValueError, match=rf"^vae_name: .*v.safetensors: {message}.*train or copy it again"):
        node("PromptEditLoadEmbeddingVAE").load("v.safetensors")


def test_the_training_script_refuses_a_bad_out_before_it_trains(sd15_checkpoint, tmp_path):
    root, _ = comfyui.find_comfyui()
    script = [sys.executable, str(pack.ROOT / "scripts" / "train_embedding_vae.py"), "--checkpoint",
              str(model_files.sd15_checkpoint_path()), "--images", str(tmp_path), "--prompt", "x", "--cpu",
              "--comfyui", str(root)]
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
    for out, message in ((tmp_path / ("o" * 250 + ".safetensors"), "too long"),):
        result = subprocess.run([*script, "--out", str(out)], capture_output=True, text=True, timeout=600)
        assert result.returncode != 0 and "--out: " in result.stderr and message in result.stderr, result.stderr[-2000:]
        assert "embedding VAE (" not in result.stderr  # refused before the training logs an iteration
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]
