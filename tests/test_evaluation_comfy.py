"""The Edit Metrics node with ComfyUI's CLIP vision and text models (tiny, random weights)."""

from __future__ import annotations

import pytest
import torch

from harness import tiny_models

pytestmark = pytest.mark.comfy


def node():
    import nodes

    return nodes.NODE_CLASS_MAPPINGS["PromptEditEditMetrics"]()


@pytest.fixture
def lpips_name(vgg_file, monkeypatch):
    import folder_paths

    path, _ = vgg_file
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "lpips", ([str(path.parent)], {".safetensors"}))
    return path.name


def test_identical_images_score_perfectly_and_variations_do_not(comfy_nodes, lpips_name, tiny_sd15_clip):
    clip_vision = tiny_models.tiny_clip_vision()
    g = torch.Generator().manual_seed(0)
    source = torch.rand(1, 64, 64, 3, generator=g)
    same = node().measure(source.repeat(2, 1, 1, 1), source, lpips_name, "a red square", clip_vision=clip_vision,
                          clip=tiny_sd15_clip)
    table, image = same["result"]
    rows = dict(line.strip("|").split("|") for line in table.splitlines()[2:])
    values = {k.strip(): float(v) for k, v in rows.items()}
    assert values["psnr_db"] == 100.0 and values["ssim"] == pytest.approx(1.0)
    assert values["clip_i"] == pytest.approx(1.0, abs=1e-4)
    assert values["lpips_to_source"] == 0.0 and values["lpips_diversity"] == 0.0
    assert -1.0 <= values["clip_t"] <= 1.0
    assert image.shape[0] == 1 and image.shape[-1] == 3

    classified = node().measure(source, source, "none", "", clip_vision=clip_vision, clip=tiny_sd15_clip,
                                classes="a red square, a blue circle, a green stripe")["result"][0]
    score = float(classified.split("| class_score | ")[1].split(" |")[0])
    assert 0.0 < score < 1.0

    varied = (source + 0.2 * torch.randn(3, 64, 64, 3, generator=g)).clamp(0, 1)
    edit = (source + 0.4 * torch.randn(1, 64, 64, 3, generator=g)).clamp(0, 1)
    table = node().measure(varied, source, lpips_name, "", edit=edit)["result"][0]
    values = {k.strip(): float(v) for k, v in (line.strip("|").split("|") for line in table.splitlines()[2:])}
    assert values["psnr_db"] < 30 and values["lpips_diversity"] > 0 and values["lpips_bound"] > 0
    assert "clip_t" not in values


def test_missing_models_and_mismatched_sizes_are_named(comfy_nodes, lpips_name):
    image = torch.rand(1, 64, 64, 3)
    with pytest.raises(ValueError, match="prompt: needs both clip and clip_vision"):
        node().measure(image, image, "none", "a prompt")
    with pytest.raises(ValueError, match="classes: needs both clip and clip_vision"):
        node().measure(image, image, "none", "", classes="a dog, a cat")
    with pytest.raises(ValueError, match="lpips_model: 'absent.safetensors' is not in models/lpips/"):
        node().measure(image, image, "absent.safetensors", "")
    with pytest.raises(ValueError, match="images / reference: the images are 32x64 and 64x64"):
        node().measure(torch.rand(1, 64, 32, 3), image, "none", "")
