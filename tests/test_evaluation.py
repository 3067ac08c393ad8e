"""Evaluation metrics against independently computed values (no ComfyUI)."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from comfyui_prompt_edit.evaluation.lpips import LPIPS, LPIPSFileError
from comfyui_prompt_edit.evaluation.metrics import (check_same_size, class_score, cosine, lpips_report,
                                                    markdown_table, mean_pairwise, table_image)


def reference_lpips(tensors, a, b):
    """LPIPS written out from its definition, layer by layer with functional ops."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    plan = [(0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28)]  # convs per block, tap after the last

    def taps(x):
        x = ((x.movedim(-1, 1) * 2 - 1) - shift) / scale
        out = []
        for block, convs in enumerate(plan):
            if block:
                x = F.max_pool2d(x, 2)
            for c in convs:
                x = F.relu(F.conv2d(x, tensors[f"features.{c}.weight"], tensors[f"features.{c}.bias"], padding=1))
            out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    return sum(((fa - fb).pow(2) * tensors[f"lin{i}.weight"]).sum(1).mean((1, 2))
               for i, (fa, fb) in enumerate(zip(taps(a), taps(b))))


def test_lpips_matches_its_definition_and_behaves_like_a_distance(vgg_file):
    path, tensors = vgg_file
    lpips = LPIPS.load(path)
    assert lpips.calibrated
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 32, 32, 3, generator=g)
    noise = torch.randn(a.shape, generator=g)
    slightly, heavily = (a + 0.05 * noise).clamp(0, 1), (a + 0.3 * noise).clamp(0, 1)
    torch.testing.assert_close(lpips(a, heavily), reference_lpips(tensors, a, heavily), rtol=1e-4, atol=1e-6)
    assert torch.equal(lpips(a, a), torch.zeros(2))
    torch.testing.assert_close(lpips(a, heavily), lpips(heavily, a))
    assert (lpips(a, slightly) < lpips(a, heavily)).all()


def test_lpips_without_heads_weighs_channels_equally(vgg_file, tmp_path):
    path, tensors = vgg_file
    save_file({k: v for k, v in tensors.items() if k.startswith("features.")}, str(tmp_path / "plain.safetensors"))
    plain = LPIPS.load(tmp_path / "plain.safetensors")
    assert not plain.calibrated
    ones = {**tensors, **{f"lin{i}.weight": torch.ones_like(tensors[f"lin{i}.weight"]) for i in range(5)}}
    a, b = torch.rand(1, 16, 16, 3), torch.rand(1, 16, 16, 3)
    torch.testing.assert_close(plain(a, b), reference_lpips(ones, a, b), rtol=1e-4, atol=1e-6)


def test_bad_lpips_files_are_refused_with_the_fix(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(LPIPSFileError, match="not a readable safetensors file"):
        LPIPS.load(tmp_path / "junk.safetensors")
    save_file({"features.0.weight": torch.zeros(3, 3)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(LPIPSFileError, match="torchvision's layout"):
        LPIPS.load(tmp_path / "wrong.safetensors")


def absolute_difference(a, b):
    return (a - b).abs().flatten(1).mean(1)


def test_pairwise_diversity_and_the_eq5_report_against_hand_values():
    levels = torch.tensor([0.0, 0.2, 0.6]).view(3, 1, 1, 1).expand(3, 4, 4, 3)
    # pairs: |0-0.2| + |0-0.6| + |0.2-0.6| = 1.2 over 3 pairs
    assert mean_pairwise(absolute_difference, levels) == pytest.approx(0.4)
    source, edit = torch.full((1, 4, 4, 3), 1.0), torch.full((1, 4, 4, 3), 0.1)
    report = lpips_report(absolute_difference, source, levels, edit)
    assert report == pytest.approx({"lpips_to_source": (1.0 + 0.8 + 0.4) / 3, "lpips_diversity": 0.4,
                                    "lpips_to_edit": (0.1 + 0.1 + 0.5) / 3, "lpips_bound": 0.9})
    with pytest.raises(ValueError, match="at least 2 images"):
        mean_pairwise(absolute_difference, levels[:1])


def test_clip_cosines_class_scores_and_tables():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(cosine(a, torch.tensor([[1.0, 0.0]])), torch.tensor([1.0, 2**-0.5]))
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    assert class_score(logits, 0) == pytest.approx((0.5 + 1.0) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="class_index 2"):
        class_score(logits, 2)
    rows = {"psnr": 31.5, "lpips_diversity": 0.25}
    assert "| psnr | 31.5000 |" in markdown_table(rows)
    image = table_image(rows)
    assert image.shape[0] == 1 and image.shape[-1] == 3 and image.min() < 0.5 < image.max()


def test_zero_shot_classifier_scores_the_nearest_class_prompt():
    from comfyui_prompt_edit.evaluation.metrics import evaluate, zero_shot_classifier

    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = lambda images: images.mean(dim=(1, 2))[:, :2]  # noqa: E731  (red and green means)
    reddish = torch.zeros(2, 16, 16, 3)
    reddish[..., 0] = 1.0
    logits = zero_shot_classifier(features, classes)(reddish)
    torch.testing.assert_close(logits, torch.tensor([[100.0, 0.0], [100.0, 0.0]]))
    rows = evaluate(reddish, reddish[:1], classifier=zero_shot_classifier(features, classes), class_index=0)
    assert rows["class_score"] == pytest.approx(1.0)


def test_images_of_different_sizes_are_named():
    with pytest.raises(ValueError, match="images / reference: the images are 16x8 and 8x8"):
        check_same_size(torch.zeros(1, 8, 16, 3), torch.zeros(1, 8, 8, 3), ("images", "reference"))


def test_the_command_line_evaluator_needs_no_comfyui(vgg_file, tmp_path):
    import json
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from comfyui_prompt_edit.evaluation.lpips import LPIPS
    from comfyui_prompt_edit.evaluation.metrics import evaluate

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    g = np.random.default_rng(0)
    source = g.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "source.png")
    (tmp_path / "variations").mkdir()
    arrays = []
    for i in range(3):
        noisy = np.clip(source.astype(int) + g.integers(-40, 40, source.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(tmp_path / "variations" / f"v{i}.png")
        arrays.append(noisy)
    command = [sys.executable, str(root / "scripts" / "evaluate.py"), "--reference", str(tmp_path / "source.png"),
               "--images", str(tmp_path / "variations"), "--lpips", str(vgg_file[0]), "--json", str(tmp_path / "m.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # no ComfyUI reachable
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads((tmp_path / "m.json").read_text())
    to_tensor = lambda a: torch.from_numpy(a.astype(np.float32) / 255)[None]  # noqa: E731
    expected = evaluate(torch.cat([to_tensor(a) for a in arrays]), to_tensor(source), lpips=LPIPS.load(vgg_file[0]))
    assert numbers == pytest.approx(expected, rel=1e-5)
    assert "| lpips_diversity |" in result.stdout

    Image.fromarray(source[:16]).save(tmp_path / "small.png")
    bad = subprocess.run(command[:3] + [str(tmp_path / "small.png")] + command[4:6], capture_output=True, text=True,
                         timeout=300, check=False)
    assert bad.returncode != 0 and "images / reference: the images are 32x32 and 32x16" in bad.stderr
