"""PIE-Bench's metrics for batch_edit.py's results (evaluation/pie_bench.py), with the models read
from local files only: DINO ViT and CLIP as transformers folders (``from_pretrained(dir)``, e.g.
facebook/dino-vitb8 and openai/clip-vit-large-patch14 saved with save_pretrained), LPIPS as the
pack's VGG-16 safetensors. Nothing is downloaded; a metric whose model is not given is left out
with a message."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np


class MetricsSetupError(ValueError):
    pass


class EditMetrics:
    def __init__(self, dino: str | None, clip: str | None, lpips: str | None,
                 log: Callable[[str], None] = print) -> None:
        import torch

        from comfy_cli import import_pack

        import_pack()
        from comfyui_prompt_edit.evaluation import pie_bench
        from comfyui_prompt_edit.evaluation.lpips import LPIPS, LPIPSFileError

        self.pie_bench, self.torch = pie_bench, torch
        self.self_similarity = self.clip_score = self.lpips = None
        if dino:
            vit = _from_pretrained("ViTModel", dino, "--dino")
            self.self_similarity = pie_bench.key_self_similarity(vit, vit.config.image_size)
        else:
            log("metrics: no --dino model: the structure distance is left out")
        if clip:
            model = _from_pretrained("CLIPModel", clip, "--clip")
            tokenizer = _from_pretrained("AutoTokenizer", clip, "--clip")
            self.clip_score = pie_bench.clip_image_text(model, tokenizer, model.config.vision_config.image_size)
        else:
            log("metrics: no --clip model: the CLIP similarities are left out")
        if lpips:
            try:
                self.lpips = LPIPS.load(lpips)
            except (LPIPSFileError, OSError) as error:
                raise MetricsSetupError(f"--lpips: {error}") from None
        else:
            log("metrics: no --lpips weights: the background LPIPS is left out")

    def measure(self, source: np.ndarray, edit_png: bytes, mask: np.ndarray | None, target_prompt: str) -> dict:
        with self.torch.no_grad():  # not torch.set_grad_enabled(False): it would leak into the caller's process
            return self._measure(source, edit_png, mask, target_prompt)

    def _measure(self, source: np.ndarray, edit_png: bytes, mask: np.ndarray | None, target_prompt: str) -> dict:
        """The metrics of one edit (PNG bytes) against its source (uint8 [H, W, 3]), outside / inside
        the edit mask (bool [H, W] at the source's size; None: no background metrics)."""
        from PIL import Image

        torch = self.torch
        with Image.open(io.BytesIO(edit_png)) as image:
            edit_image = image.convert("RGB")
        height, width = source.shape[:2]
        if edit_image.size != (width, height):  # the workflow may work at another size
            edit_image = edit_image.resize((width, height), Image.BICUBIC)
        as_tensor = lambda pixels: torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255.0)[None]  # noqa: E731
        a, b = as_tensor(source), as_tensor(edit_image)
        mask_tensor = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=bool))
        rows: dict[str, float] = {}
        if self.self_similarity is not None:
            rows["structure_distance"] = self.pie_bench.structure_distance(self.self_similarity, a, b)
        if mask_tensor is not None:
            rows.update(self.pie_bench.background(a, b, mask_tensor, self.lpips))
        if self.clip_score is not None:
            rows.update(self.pie_bench.clip_scores(self.clip_score, b, mask_tensor, target_prompt))
        return rows


def _from_pretrained(kind: str, directory: str, option: str):
    if not Path(directory).is_dir():
        raise MetricsSetupError(f"{option}: {directory} is not a folder (give a transformers model folder, "
                                "as save_pretrained writes it)")
    try:
        import transformers
    except ImportError:
        raise MetricsSetupError(f"{option}: the metrics need transformers (pip install transformers)") from None
    try:
        return getattr(transformers, kind).from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise MetricsSetupError(f"{option}: cannot load {kind} from {directory} ({error})") from None
