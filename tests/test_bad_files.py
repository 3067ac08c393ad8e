"""Bad file names and damaged files, without ComfyUI: the one name check, the atomic writer that
never loses a result, and the loaders of inversions and embedding VAEs refusing every damaged file
with a message naming it (issue 20). Through the nodes and a server: test_bad_files_comfy.py."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
import torch
from comfyui_prompt_edit.base.file_names import FileNameError, check_file_name
from comfyui_prompt_edit.base.safetensors_io import SaveError, read_safetensors, write_safetensors
from comfyui_prompt_edit.inversion.result import Inversion, InversionFileError
from comfyui_prompt_edit.vae_embed.checkpoint import EmbeddingVAEFileError, TrainedEmbeddingVAE
from comfyui_prompt_edit.vae_embed.model import EmbeddingVAE, EmbeddingVAEConfig
from safetensors import safe_open
from safetensors.torch import save_file

# -- the name check ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,message", [
    ("a" * 250, "too long: with '.safetensors' it makes a 262-byte file name, the file system takes at most 255; "
                "shorten it to at most 243 bytes"),
    ("é" * 125, "makes a 262-byte file name"),  # bytes, not characters
    ("inv\x00ersion", r"control characters \('\\x00'\)"),
    ("bad\x07bell", "control characters"),
    ("sub/name", "without folders"),
    ("..\\up", "without folders"),
    (".", "starts with '.'"),
    ("..", "starts with '.'"),
    (".hidden", "starts with '.'"),
    ("", "is empty"),
    ("name.", "ends with '.'"),
    ("NUL", "device name on Windows"),
    ("com1.backup", "device name on Windows"),
    ("a:b", "without folders"),
    ("\udc80", "not valid Unicode"),
    (12, "must be text"),
])
def test_a_name_the_file_system_refuses_is_named_with_what_to_do(name, message):
    with pytest.raises(FileNameError, match=rf"^save_as: .*{message}"):
        check_file_name(name, "save_as", ".safetensors")


@pytest.mark.parametrize("name", ["photo 1", "chat_été-2", "a" * 243, "console", "v1.5 cat"])
def test_usable_names_pass_unchanged(name):
    assert check_file_name(name, "save_as", ".safetensors") == name


# -- the atomic writer ----------------------------------------------------------------------------

TENSORS = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}


def test_the_longest_name_the_file_system_takes_is_written(tmp_path):
    # the temporary name was the final name + 42 characters: a 230-character name failed after training
    path = tmp_path / ("a" * 243 + ".safetensors")  # 255 bytes
    write_safetensors(TENSORS, path, {"k": "v"})
    meta, tensors = read_safetensors(path, ValueError, "")
    assert meta == {"k": "v"} and torch.equal(tensors["w"], TENSORS["w"])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_failed_final_rename_keeps_the_result_and_says_where(tmp_path):
    target = tmp_path / "taken.safetensors"
    target.mkdir()  # os.replace onto a folder fails after the result is written
    with pytest.raises(SaveError, match=r"taken.safetensors: could not be written .*the result is kept in (\S+):") as caught:
        write_safetensors(TENSORS, target, {})
    kept = caught.value.args[0].split("kept in ")[1].split(":")[0]
    assert torch.equal(read_safetensors(kept, ValueError, "")[1]["w"], TENSORS["w"])


def test_a_folder_that_cannot_be_written_keeps_the_result_in_the_temporary_folder(tmp_path):
    target = tmp_path / "gone" / "vae.safetensors"  # its folder was removed while training
    with pytest.raises(SaveError, match=r"vae.safetensors: could not be written .*the result is kept in (\S+): move it") as caught:
        write_safetensors(TENSORS, target, {"k": "v"})
    kept = Path(caught.value.args[0].split("kept in ")[1].split(": move")[0])
    try:
        meta, tensors = read_safetensors(kept, ValueError, "")
        assert meta == {"k": "v"} and torch.equal(tensors["w"], TENSORS["w"])
    finally:
        kept.unlink()


def test_a_header_whose_length_starts_like_a_pickle_is_read(tmp_path):
    # a header of 0x0280 bytes starts with the bytes of a protocol-2 pickle: only the content tells them apart
    path = tmp_path / "pickle_like.safetensors"
    for pad in range(1000):
        save_file(TENSORS, str(path), metadata={"pad": "x" * pad})
        if int.from_bytes(path.read_bytes()[:8], "little") == 0x0280:
            break
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert torch.equal(read_safetensors(path, ValueError, "")[1]["w"], TENSORS["w"])


# -- inversion files ------------------------------------------------------------------------------

STEPS = 3


def inversion(method: str = "direct") -> Inversion:
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, 4, 8, 8, generator=g)
    return Inversion(torch.randn(STEPS, 77, 32, generator=g), torch.tensor([14.6, 3.0, 0.5, 0.0]), noisy,
                     torch.randn(1, 4, 8, 8, generator=g), 7.5, method, "ddim_uniform", STEPS, "abc",
                     torch.randn(STEPS + 1, 4, 8, 8, generator=g) if method == "direct" else None)


def rewrite(path, tmp_path, change=None, meta_change=None):
    """A copy of the safetensors file ``path`` with its tensors (``change(tensors)``) or metadata changed."""
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    change and change(tensors)
    meta_change and meta_change(meta)
    out = tmp_path / "changed.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out), metadata=meta)
    return out


def test_an_inversion_round_trips(tmp_path):
    saved = inversion()
    saved.save(tmp_path / "inv.safetensors")
    loaded = Inversion.load(tmp_path / "inv.safetensors")
    assert torch.equal(loaded.pivots, saved.pivots) and loaded.method == "direct"


def _set(key, value):
    return lambda tensors: tensors.__setitem__(key, value(tensors[key]))


@pytest.mark.parametrize("change,message", [
    (_set("unconds", torch.Tensor.half), "tensor 'unconds' is float16, expected float32 or float64"),
    (_set("sigmas", lambda t: (t * 100).long()), "tensor 'sigmas' is int64"),
    (_set("noisy", lambda t: t.index_fill(3, torch.tensor([0]), float("nan"))), "'noisy' holds NaN or infinite"),
    (_set("unconds", lambda t: t.index_fill(0, torch.tensor([1]), float("inf"))), "'unconds' holds NaN or infinite"),
    (_set("noisy", lambda t: t[:, :, :4]), r"source has shape \[1, 4, 8, 8\], noisy \[1, 4, 4, 8\]"),
    (_set("sigmas", lambda t: t[:-1]), r"sigmas has shape \[3\], expected \[4\]"),
    (_set("sigmas", lambda t: t.flip(0)), "not a descending schedule"),
    (_set("unconds", lambda t: t[0]), r"unconds has shape \[77, 32\], expected \[steps, tokens, channels\]"),
    (_set("pivots", lambda t: t[:, :2]), r"pivots has shape \[4, 2, 8, 8\], expected \[4, 4, 8, 8\]"),
    (lambda tensors: tensors.update(noisy=tensors["noisy"].repeat(2, 1, 1, 1), source=tensors["source"].repeat(2, 1, 1, 1)),
     "expected one latent"),
    (lambda tensors: tensors.pop("pivots"), r"lacks \['pivots'\]"),
])
def test_a_damaged_inversion_is_refused_at_load_naming_the_file(tmp_path, change, message):
    inversion().save(tmp_path / "inv.safetensors")
    bad = rewrite(tmp_path / "inv.safetensors", tmp_path, change)
    with pytest.raises(InversionFileError, match=rf"changed.safetensors: .*{message}.*save the inversion again"):
        Inversion.load(bad)


@pytest.mark.parametrize("key,value,message", [
    ("method", "magic", "unknown method 'magic'"),
    ("guidance", "nan", "guidance nan out of range"),
    ("steps", "0", "steps 0"),
    ("steps", "many", "damaged metadata"),
    ("format", "other", "not an inversion saved by this pack"),
])
def test_damaged_inversion_metadata_is_refused(tmp_path, key, value, message):
    inversion().save(tmp_path / "inv.safetensors")
    bad = rewrite(tmp_path / "inv.safetensors", tmp_path, meta_change=lambda meta: meta.__setitem__(key, value))
    with pytest.raises(InversionFileError, match=message):
        Inversion.load(bad)


def _pickle(path):
    torch.save({"unconds": torch.zeros(2)}, path)


def _truncated(path):
    inversion().save(path)
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("make,message", [
    (_pickle, r"not a readable safetensors file \(it is a PyTorch pickle \(.pt / .ckpt\) renamed; the pack loads safetensors only\)"),
    (_truncated, "shorter than its header says"),
    (lambda path: path.write_bytes(b"abc"), "3 bytes long, too short"),
    (lambda path: path.write_bytes((1 << 40).to_bytes(8, "little") + b"{}"), "its header is 1099511627776 bytes, more than the 1048576"),
    (lambda path: path.write_bytes((8).to_bytes(8, "little") + b"not json"), "has no JSON header"),
    (lambda path: path.write_bytes((2).to_bytes(8, "little") + b"{]"), "not a readable safetensors file"),
    (lambda path: path.write_text("hello, this is text and no safetensors file"), "header"),
])
def test_a_file_that_is_no_safetensors_is_named(tmp_path, make, message):
    path = tmp_path / "photo.safetensors"
    make(path)
    with pytest.raises(InversionFileError, match=rf"photo.safetensors: .*{message}.*save the inversion again"):
        Inversion.load(path)
    with pytest.raises(EmbeddingVAEFileError, match=rf"photo.safetensors: .*{message}.*train or copy it again"):
        TrainedEmbeddingVAE.load(path)


# -- embedding-VAE files --------------------------------------------------------------------------


def vae_file(tmp_path, architecture="token_mlp"):
    path = tmp_path / "vae.safetensors"
    TrainedEmbeddingVAE(EmbeddingVAE(EmbeddingVAEConfig(architecture, 6, 8, latent=4, hidden=16)), "null-text").save(path)
    return path


@pytest.mark.parametrize("change,message", [
    (lambda t: t.__setitem__("time.0.weight", torch.full_like(t["time.0.weight"], float("nan"))),
     "tensor 'time.0.weight' holds NaN or infinite values"),
    (lambda t: t.__setitem__("time.0.bias", t["time.0.bias"].long()), "tensor 'time.0.bias' is int64"),
])
def test_an_embedding_vae_with_bad_weights_is_refused(tmp_path, change, message):
    bad = rewrite(vae_file(tmp_path), tmp_path, change)
    with pytest.raises(EmbeddingVAEFileError, match=rf"changed.safetensors: {message}.*train or copy it again"):
        TrainedEmbeddingVAE.load(bad)


@pytest.mark.parametrize("config,message", [
    ({"tokens": 10**12}, "config tokens = 1000000000000 is not a whole number in 1..4096"),
    ({"dim": -3}, "config dim = -3"),
    ({"hidden": 2.5}, "config hidden = 2.5"),
    ({"layers": True}, "config layers = True"),
    ({"heads": "4"}, "config heads = '4'"),
    ({"colour": 1}, "unexpected keyword argument 'colour'"),
    ({"architecture": "rnn"}, "architecture 'rnn' is not one of"),
])
def test_an_embedding_vae_config_out_of_bounds_is_refused_before_anything_is_built(tmp_path, config, message):
    bad = rewrite(vae_file(tmp_path), tmp_path, meta_change=lambda meta: meta.__setitem__(
        "config", json.dumps({**json.loads(meta["config"]), **config})))
    with pytest.raises(EmbeddingVAEFileError, match=rf"changed.safetensors: damaged metadata \(.*{message}"):
        TrainedEmbeddingVAE.load(bad)


def test_a_large_config_that_does_not_match_the_weights_allocates_nothing(tmp_path):
    # within the bounds, but 3.2 GB of weights if built: the file's own (small) weights are compared
    # with the configuration's shapes first, on the meta device
    large = {"architecture": "sequence_mlp", "tokens": 4096, "dim": 16384, "hidden": 16384, "reduced": 8}
    bad = rewrite(vae_file(tmp_path, "sequence_mlp"), tmp_path, meta_change=lambda meta: meta.__setitem__(
        "config", json.dumps({**json.loads(meta["config"]), **large})))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(EmbeddingVAEFileError, match="the weights do not match the saved configuration"):
        TrainedEmbeddingVAE.load(bad)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: far below 3.2 GB


# -- the evaluation's files ------------------------------------------------------------------------


def test_lpips_weights_with_nan_are_refused(tmp_path, vgg_file):
    from comfyui_prompt_edit.evaluation.lpips import LPIPS, LPIPSFileError

    tensors = dict(vgg_file[1])
    tensors["features.0.bias"] = torch.full_like(tensors["features.0.bias"], float("nan"))
    save_file(tensors, str(tmp_path / "nan.safetensors"))
    with pytest.raises(LPIPSFileError, match="nan.safetensors: tensor 'features.0.bias' holds NaN"):
        LPIPS.load(tmp_path / "nan.safetensors")


def test_the_evaluate_script_refuses_an_unwritable_json_before_measuring(tmp_path):
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    for name in ("source", "edit"):
        Image.fromarray(np.full((16, 16, 3), 90 if name == "source" else 100, dtype=np.uint8)).save(tmp_path / f"{name}.png")
    script = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
    result = subprocess.run([sys.executable, str(script), "--reference", str(tmp_path / "source.png"), "--images",
                             str(tmp_path / "edit.png"), "--json", str(tmp_path / ("j" * 260 + ".json"))],
                            capture_output=True, text=True, timeout=300, check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 2 and result.stderr.startswith("--json:") and "give a shorter path" in result.stderr
    assert "| psnr" not in result.stdout  # refused before anything was measured
