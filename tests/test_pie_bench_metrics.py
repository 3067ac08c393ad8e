"""PIE-Bench's metrics (evaluation/pie_bench.py through scripts/edit_metrics.py) on random-weight tiny
DINO ViT and CLIP models built with transformers and saved as local folders, and random LPIPS VGG
weights: identical images score perfectly, a change inside the edit mask leaves the background
metrics perfect, a missing model leaves its metric out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from harness import comfyui

pytestmark = pytest.mark.comfy  # transformers and CLIP's tokenizer files come with the ComfyUI host


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    root, reason = comfyui.find_comfyui()
    if root is None:
        pytest.skip(reason)
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, ViTConfig, ViTModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pie_models")
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(folder / "dino")
    tokenizer = CLIPTokenizer.from_pretrained(str(root / "comfy" / "sd1_tokenizer"))
    config = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "vocab_size": tokenizer.vocab_size,
                                     "max_position_embeddings": 77},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    CLIPModel(config).save_pretrained(folder / "clip")
    tokenizer.save_pretrained(folder / "clip")
    return folder


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def source_and_mask():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), dtype=bool)
    mask[10:30, 12:36] = True
    return source, mask


def test_identical_images_score_perfectly_and_a_masked_change_keeps_the_background(model_folders, vgg_file):
    from edit_metrics import EditMetrics

    metrics = EditMetrics(str(model_folders / "dino"), str(model_folders / "clip"), str(vgg_file[0]), log=print)
    source, mask = source_and_mask()
    same = metrics.measure(source, png(source), mask, "a red square")
    assert set(same) == {"structure_distance", "psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part",
                         "ssim_unedit_part", "clip_similarity_target_image", "clip_similarity_target_image_edit_part"}
    assert same["psnr_unedit_part"] == 100.0 and same["mse_unedit_part"] == 0.0
    assert same["lpips_unedit_part"] == pytest.approx(0, abs=1e-6) and same["ssim_unedit_part"] == pytest.approx(1)
    assert same["structure_distance"] == pytest.approx(0, abs=1e-9)

    edited = source.copy()
    edited[mask] = 255 - edited[mask]
    inside = metrics.measure(source, png(edited), mask, "a red square")
    for key in ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part"):
        assert inside[key] == pytest.approx(same[key], abs=1e-6), key
    assert inside["structure_distance"] > 1e-6  # the edit changed the image's self-similarity
    assert 0 <= inside["clip_similarity_target_image"] <= 100

    outside = source.copy()
    outside[~mask] = 255 - outside[~mask]
    changed = metrics.measure(source, png(outside), mask, "a red square")
    assert changed["psnr_unedit_part"] < 20 and changed["mse_unedit_part"] > 0.01
    assert changed["lpips_unedit_part"] > 1e-4 and changed["ssim_unedit_part"] < 0.9


def test_a_metric_whose_model_is_missing_is_left_out_with_a_message(model_folders):
    from edit_metrics import EditMetrics, MetricsSetupError

    messages = []
    metrics = EditMetrics(None, None, None, log=messages.append)
    assert any("--dino" in m for m in messages) and any("--clip" in m for m in messages) and any("--lpips" in m for m in messages)
    source, mask = source_and_mask()
    assert set(metrics.measure(source, png(source), mask, "x")) == {"psnr_unedit_part", "mse_unedit_part", "ssim_unedit_part"}
    with pytest.raises(MetricsSetupError, match="--clip"):
        EditMetrics(None, str(model_folders / "nothing"), None, log=messages.append)


def test_the_summary_has_pie_bench_columns_per_edit_type_and_overall():
    from comfyui_prompt_edit.evaluation import pie_bench

    records = [{"id": "a", "edit_type": "1", "metrics": {"psnr_unedit_part": 30.0, "structure_distance": 0.002}},
               {"id": "b", "edit_type": "1", "metrics": {"psnr_unedit_part": 20.0, "structure_distance": 0.004}},
               {"id": "c", "edit_type": "6", "metrics": {"psnr_unedit_part": 40.0}}]
    summary = pie_bench.summarise(records)
    assert list(summary) == ["1", "6", "overall"]
    assert summary["1"] == {"rows": 2, "psnr_unedit_part": 25.0, "structure_distance": pytest.approx(0.003)}
    assert summary["overall"]["psnr_unedit_part"] == 30.0 and summary["overall"]["rows"] == 3
    table = pie_bench.markdown(summary).splitlines()
    assert table[0].startswith("| Edit type | Rows | Structure Distance ×10³ ↓ | Background PSNR ↑")
    assert table[2] == "| 1 change object | 2 | 3.00 | 25.00 | – | – | – | – | – |"
    assert table[-1].startswith("| Overall | 3 | 3.00 | 30.00 |")
