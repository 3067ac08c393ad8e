"""PIE-Bench's metrics of an edit (Ju et al. 2023, "Direct Inversion"), plain torch; the models are
passed in (scripts/edit_metrics.py loads them from local files):

- structure distance: MSE between the source's and the edit's self-similarity of DINO ViT keys
  (last layer, every token, cosine), as Tumanyan et al.'s "Splicing ViT Features";
- background preservation, on the images with the edit mask zeroed in both (as PIE-Bench does):
  PSNR (capped at 100 dB where identical), LPIPS, MSE, SSIM;
- CLIP similarity of the whole edit and of its edit region (the edit with the outside zeroed) to
  the target prompt: ``max(100 · cos, 0)`` (torchmetrics' CLIPScore, which PIE-Bench uses).

Images are ``[1, H, W, 3]`` in [0, 1]; a mask is bool ``[H, W]``, True where the edit may change.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..base.errors import PromptEditError
from ..base.image_metrics import psnr, ssim

PSNR_CAP_DB = 100.0
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

# PIE-Bench's table: (key, column title, factor the mean is shown multiplied by)
COLUMNS = (("structure_distance", "Structure Distance ×10³ ↓", 1e3),
           ("psnr_unedit_part", "Background PSNR ↑", 1.0),
           ("lpips_unedit_part", "Background LPIPS ×10³ ↓", 1e3),
           ("mse_unedit_part", "Background MSE ×10⁴ ↓", 1e4),
           ("ssim_unedit_part", "Background SSIM ×10² ↑", 1e2),
           ("clip_similarity_target_image", "CLIP Whole ↑", 1.0),
           ("clip_similarity_target_image_edit_part", "CLIP Edited ↑", 1.0))
EDIT_TYPES = {"0": "random", "1": "change object", "2": "add object", "3": "delete object",
              "4": "change attribute content", "5": "change attribute pose", "6": "change attribute color",
              "7": "change attribute material", "8": "change background", "9": "change style"}


def _pixels(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    x = images[..., :3].movedim(-1, 1).float()
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def key_self_similarity(vit, image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """images -> [N, T, T] cosine self-similarity of the keys of a ViT's last attention layer
    (a transformers ViTModel with DINO's weights; the key projection is found by name, ``k_proj``
    or ``key``, whichever the installed transformers calls it)."""
    keys = [module for name, module in vit.named_modules() if name.endswith(("k_proj", "attention.key"))]
    if not keys:
        raise PromptEditError("the DINO model has no key projection (k_proj / attention.key) to read")
    captured: list[torch.Tensor] = []

    def similarity(images: torch.Tensor) -> torch.Tensor:
        handle = keys[-1].register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            with torch.no_grad():
                vit(pixel_values=_pixels(images, image_size, IMAGENET_MEAN, IMAGENET_STD))
        finally:
            handle.remove()
        k = F.normalize(captured.pop().float(), dim=-1)
        return k @ k.transpose(-1, -2)

    return similarity


def structure_distance(self_similarity: Callable[[torch.Tensor], torch.Tensor],
                       source: torch.Tensor, edit: torch.Tensor) -> float:
    return float(F.mse_loss(self_similarity(edit), self_similarity(source)))


def background(source: torch.Tensor, edit: torch.Tensor, mask: torch.Tensor,
               lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """PSNR, MSE, SSIM (and LPIPS) of the two images with the edit region zeroed in both."""
    keep = (~mask.bool()).to(source.dtype)[None, :, :, None]
    a, b = source[..., :3] * keep, edit[..., :3] * keep
    rows = {"psnr_unedit_part": float(psnr(a, b).clamp(max=PSNR_CAP_DB)),
            "mse_unedit_part": float((a.double() - b.double()).pow(2).mean()),
            "ssim_unedit_part": float(ssim(a, b))}
    if lpips is not None:
        rows["lpips_unedit_part"] = float(lpips(a, b).mean())
    return rows


def clip_image_text(model, tokenizer, image_size: int) -> Callable[[torch.Tensor, str], float]:
    """(images, text) -> CLIPScore ``max(100 · cos, 0)`` with a transformers CLIPModel."""
    def score(images: torch.Tensor, text: str) -> float:
        with torch.no_grad():
            tokens = tokenizer([text], padding=True, truncation=True, return_tensors="pt")
            text_features = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
            image_features = model.get_image_features(pixel_values=_pixels(images, image_size, CLIP_MEAN, CLIP_STD))
        text_features = getattr(text_features, "pooler_output", text_features)
        image_features = getattr(image_features, "pooler_output", image_features)
        cos = F.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
        return float((100 * cos).clamp(min=0).mean())

    return score


def clip_scores(score: Callable[[torch.Tensor, str], float], edit: torch.Tensor, mask: torch.Tensor | None,
                target_prompt: str) -> dict[str, float]:
    rows = {"clip_similarity_target_image": score(edit, target_prompt)}
    if mask is not None:
        rows["clip_similarity_target_image_edit_part"] = score(edit * mask.to(edit.dtype)[None, :, :, None], target_prompt)
    return rows


def summarise(records: list[dict]) -> dict[str, dict[str, float]]:
    """Means of every metric per edit type and over all rows: {group: {metric: mean, "rows": n}}."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        if record.get("edit_type") is not None:
            groups.setdefault(str(record["edit_type"]), []).append(record.get("metrics") or {})
    groups["overall"] = [record.get("metrics") or {} for record in records]
    summary = {}
    for group in sorted(groups, key=lambda g: (g == "overall", g)):
        rows = groups[group]
        keys = sorted({key for row in rows for key in row})
        means = {key: sum(row[key] for row in rows if key in row) / sum(key in row for row in rows) for key in keys}
        summary[group] = {"rows": len(rows), **means}
    return summary


def markdown(summary: dict[str, dict[str, float]]) -> str:
    """PIE-Bench's table: one line per edit type and the overall means, its columns and scales
    (a metric that was not computed shows as –)."""
    lines = ["| Edit type | Rows | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for group, row in summary.items():
        name = "Overall" if group == "overall" else f"{group} {EDIT_TYPES.get(group, '')}".strip()
        cells = [f"{row[key] * factor:.2f}" if key in row else "–" for key, _, factor in COLUMNS]
        lines.append(f"| {name} | {row['rows']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
