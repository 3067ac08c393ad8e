"""The result of an inversion: what a stock sampler needs to reconstruct (and edit) the image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.errors import PromptEditError
from ..base.safetensors_io import read_safetensors, write_safetensors

FORMAT = "comfyui-prompt-edit/inversion/v1"


class InversionFileError(PromptEditError):
    """A saved inversion cannot be used; the message says why and what to do."""


@dataclass
class Inversion:
    """Per-step unconditional contexts along one σ schedule, and the noisy latent to start from.

    ``unconds[k]`` is the unconditional context of sampling step ``k`` (fp32, ``[tokens, dim]``).
    Latents are in ComfyUI's LATENT format (before the model's scale factor): ``noisy`` is the one
    to sample from (at ``sigmas[0]``), ``source`` the photo's.
    """

    unconds: torch.Tensor  # [steps, tokens, dim]
    sigmas: torch.Tensor  # [steps + 1], descending, as the sampler walks them
    noisy: torch.Tensor  # [1, C, H, W]
    source: torch.Tensor  # [1, C, H, W]
    guidance: float
    method: str
    scheduler: str
    steps: int
    model_fingerprint: str
    pivots: torch.Tensor | None = None  # direct: [steps + 1, C, H, W], the sampler's x (model space) after each step

    def step_at(self, sigma: float) -> int:
        """The sampling step whose σ this is (robust to a sampler that starts part-way)."""
        return int(torch.argmin((self.sigmas[:-1] - sigma).abs()))

    def save(self, path: str | Path) -> None:
        tensors = {"unconds": self.unconds.contiguous(), "sigmas": self.sigmas.contiguous(),
                   "noisy": self.noisy.contiguous(), "source": self.source.contiguous()}
        if self.pivots is not None:
            tensors["pivots"] = self.pivots.contiguous()
        meta = {"format": FORMAT, "guidance": repr(self.guidance), "method": self.method,
                "scheduler": self.scheduler, "steps": str(self.steps), "model_fingerprint": self.model_fingerprint}
        write_safetensors({k: v.detach().cpu().float() for k, v in tensors.items()}, path, meta)

    @classmethod
    def load(cls, path: str | Path) -> "Inversion":
        meta, tensors = read_safetensors(path, InversionFileError, "save the inversion again")
        if meta.get("format") != FORMAT:
            raise InversionFileError(f"{path}: not an inversion saved by this pack (format {meta.get('format')!r})")
        missing = {"unconds", "sigmas", "noisy", "source"} - set(tensors)
        if meta.get("method") == "direct" and "pivots" not in tensors:
            missing.add("pivots")
        if missing:
            raise InversionFileError(f"{path}: the file lacks {sorted(missing)}; save the inversion again")
        try:
            return cls(tensors["unconds"], tensors["sigmas"], tensors["noisy"], tensors["source"],
                       float(meta["guidance"]), meta["method"], meta["scheduler"], int(meta["steps"]),
                       meta["model_fingerprint"], tensors.get("pivots"))
        except (KeyError, ValueError) as e:
            raise InversionFileError(f"{path}: damaged metadata ({e}); save the inversion again") from None
