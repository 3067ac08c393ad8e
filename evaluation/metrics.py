"""The paper's evaluation metrics over image batches (plain torch): reconstruction (PSNR, SSIM),
text fidelity (CLIP-T, CLIP-I), LPIPS fidelity to the source and diversity among variations with
eq. 5's bound, and a classifier's score; rendered as a markdown table or a small table image.

Images are ComfyUI IMAGE tensors ``[N, H, W, 3]`` in [0, 1]. Feature extractors are passed in, so
nothing here loads a model.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..base.errors import PromptEditError
from ..base.image_metrics import psnr, ssim

__all__ = ["cosine", "check_same_size", "mean_pairwise", "lpips_report", "class_score",
           "zero_shot_classifier", "evaluate", "markdown_table", "table_image"]

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # [N,H,W,3] x2 -> [N]


def check_same_size(images: torch.Tensor, reference: torch.Tensor, names: tuple[str, str]) -> None:
    if images.shape[1:3] != reference.shape[1:3]:
        raise PromptEditError(f"{names[0]} / {names[1]}: the images are {images.shape[2]}x{images.shape[1]} and "
                         f"{reference.shape[2]}x{reference.shape[1]}; compare images of one size (scale one of them)")


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of feature rows (``b`` may be one row): CLIP-T with image and text
    features, CLIP-I with two images' features."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float().expand_as(a), dim=-1)


def mean_pairwise(distance: Distance, images: torch.Tensor) -> float:
    """Mean distance over all unordered pairs of a batch (the diversity of variations)."""
    if images.shape[0] < 2:
        raise PromptEditError("the diversity among variations needs at least 2 images")
    pairs = list(combinations(range(images.shape[0]), 2))
    first = torch.tensor([i for i, _ in pairs])
    second = torch.tensor([j for _, j in pairs])
    return float(distance(images[first], images[second]).mean())


def lpips_report(distance: Distance, source: torch.Tensor, variations: torch.Tensor,
                 edit: torch.Tensor | None = None) -> dict[str, float]:
    """LPIPS of the paper's evaluation: fidelity ``LPIPS(I, I'')`` (to the source, lower is closer),
    diversity (mean pairwise among the variations, and ``LPIPS(I', I'')`` to the plain edit) and
    eq. 5's upper bound ``LPIPS(I, I')``, which diversity approaches as it grows."""
    report = {"lpips_to_source": float(distance(variations, source.expand_as(variations)).mean())}
    if variations.shape[0] >= 2:
        report["lpips_diversity"] = mean_pairwise(distance, variations)
    if edit is not None:
        report["lpips_to_edit"] = float(distance(variations, edit.expand_as(variations)).mean())
        report["lpips_bound"] = float(distance(edit, source).mean())
    return report


def class_score(logits: torch.Tensor, class_index: int) -> float:
    """Mean softmax probability of ``class_index`` under a classifier's ``logits [N, classes]``."""
    if not 0 <= class_index < logits.shape[-1]:
        raise PromptEditError(f"class_index {class_index} is not one of the classifier's {logits.shape[-1]} classes")
    return float(torch.softmax(logits.float(), dim=-1)[:, class_index].mean())


def markdown_table(rows: dict[str, float]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in rows.items()]
    return "\n".join(lines)


def table_image(rows: dict[str, float], width: int = 360, row_height: int = 22) -> torch.Tensor:
    """A small IMAGE ``[1, H, W, 3]`` listing the metrics, for a Preview/Save Image node."""
    height = row_height * (len(rows) + 1) + 8
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((8, 4), "metric", fill=(0, 0, 0), font=font)
    draw.text((width - 110, 4), "value", fill=(0, 0, 0), font=font)
    for i, (name, value) in enumerate(rows.items(), start=1):
        y = 4 + i * row_height
        draw.line((4, y - 3, width - 4, y - 3), fill=(200, 200, 200))
        draw.text((8, y), name, fill=(0, 0, 0), font=font)
        draw.text((width - 110, y), f"{value:.4f}", fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]


Features = Callable[[torch.Tensor], torch.Tensor]  # IMAGE batch -> feature rows


def evaluate(images: torch.Tensor, reference: torch.Tensor, edit: torch.Tensor | None = None,
             lpips: Distance | None = None, image_features: Features | None = None,
             text_features: torch.Tensor | None = None, classifier: Features | None = None,
             class_index: int = 0) -> dict[str, float]:
    """Every metric the given models allow, averaged over ``images`` (the edits or variations I''):
    PSNR/SSIM to ``reference`` (the source I), CLIP-I to it and CLIP-T to the prompt's
    ``text_features`` (with ``image_features``), the LPIPS report (with ``lpips``; ``edit`` I'
    adds eq. 5's bound), and the classifier's score of ``class_index`` (``classifier`` gives logits)."""
    check_same_size(images, reference, ("images", "reference"))
    if edit is not None:
        check_same_size(edit, reference, ("edit", "reference"))
    batch_reference = reference[:1].expand_as(images)
    rows = {"psnr_db": float(psnr(images, batch_reference).clamp(max=100.0).mean()),
            "ssim": float(ssim(images, batch_reference).mean())}
    if image_features is not None:
        features = image_features(images)
        rows["clip_i"] = float(cosine(features, image_features(reference[:1])).mean())
        if text_features is not None:
            rows["clip_t"] = float(cosine(features, text_features).mean())
    if lpips is not None:
        rows.update(lpips_report(lpips, reference[:1], images, None if edit is None else edit[:1]))
    if classifier is not None:
        rows["class_score"] = class_score(classifier(images), class_index)
    return rows


def zero_shot_classifier(image_features: Features, class_text_features: torch.Tensor) -> Features:
    """CLIP as a classifier: logits ``100 · cos(image, class prompt)`` over the class prompts' text
    features ``[classes, D]`` (CLIP's own logit scale)."""
    classes = torch.nn.functional.normalize(class_text_features.float(), dim=-1)
    return lambda images: 100.0 * torch.nn.functional.normalize(image_features(images), dim=-1) @ classes.T
