"""The result of an inversion: what a stock sampler needs to reconstruct (and edit) the image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.errors import PromptEditError
from ..base.safetensors_io import check_tensors, read_safetensors, write_safetensors
from ..base.sigma_steps import step_at
from .experts import EXPERT_NAMES, ExpertSteps, switch_problem

FORMAT = "comfyui-prompt-edit/inversion/v1"
METHODS = ("null-text", "null-text fast", "direct", "negative-prompt", "ddim")  # Invert Image's
AGAIN = "save the inversion again"


class InversionFileError(PromptEditError):
    """A saved inversion cannot be used; the message says why and what to do."""


@dataclass
class Inversion:
    """Per-step unconditional contexts along one σ schedule, and the noisy latent to start from.

    ``unconds[k]`` is the unconditional context of sampling step ``k`` (fp32, ``[tokens, dim]``).
    Latents are in ComfyUI's LATENT format (before the model's scale factor): ``noisy`` is the one
    to sample from (at ``sigmas[0]``), ``source`` the photo's.

    Made over two experts (Wan 2.2 A14B: ``switch_at_step`` > 0), ``model_fingerprint`` is the
    high-noise expert's, which samples steps ``[0, switch_at_step)``, and ``low_noise_fingerprint``
    the low-noise expert's, which samples the rest.
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
    low_noise_fingerprint: str = ""  # two experts: the low-noise expert's ("" for one model)
    switch_at_step: int = 0  # two experts: the first step of the low-noise expert (0: one model)

    @property
    def experts(self) -> ExpertSteps:
        return ExpertSteps(len(self.sigmas) - 1, self.switch_at_step)

    def expert_of(self, fingerprint: str) -> range | None:
        """The sampling steps that the model with ``fingerprint`` samples with this inversion (all of
        them for its one model, or an expert's own; both where the two experts are the same model),
        None for another model."""
        experts = self.experts
        mine = [experts.steps_of(e) for e, f in enumerate((self.model_fingerprint, self.low_noise_fingerprint))
                if f == fingerprint]
        if not mine:
            return None
        return range(min(r.start for r in mine), max(r.stop for r in mine))

    def expert_name(self, fingerprint: str) -> str:
        """What the model with ``fingerprint`` is to this inversion, for messages."""
        if not self.switch_at_step:
            return "the model of the inversion"
        names = [n for n, f in zip(EXPERT_NAMES, (self.model_fingerprint, self.low_noise_fingerprint))
                 if f == fingerprint]
        return " and ".join(f"the inversion's {n}" for n in names) or "another model"

    def step_at(self, sigma: float) -> int:
        """The sampling step whose σ this is, along the whole schedule (so a sampler that starts
        part-way still finds the inversion's step)."""
        return step_at(sigma, self.sigmas)

    def save(self, path: str | Path) -> None:
        tensors = {"unconds": self.unconds.contiguous(), "sigmas": self.sigmas.contiguous(),
                   "noisy": self.noisy.contiguous(), "source": self.source.contiguous()}
        if self.pivots is not None:
            tensors["pivots"] = self.pivots.contiguous()
        meta = {"format": FORMAT, "guidance": repr(self.guidance), "method": self.method,
                "scheduler": self.scheduler, "steps": str(self.steps), "model_fingerprint": self.model_fingerprint}
        if self.switch_at_step:
            meta.update(low_noise_fingerprint=self.low_noise_fingerprint, switch_at_step=str(self.switch_at_step))
        write_safetensors({k: v.detach().cpu().float() for k, v in tensors.items()}, path, meta)

    @classmethod
    def load(cls, path: str | Path) -> "Inversion":
        """The inversion saved in ``path``, checked whole: its format and metadata, float32 finite
        tensors (a half-precision copy loses the schedule's precision; NaN gives black images) and
        shapes that fit each other, so a damaged file fails here and not deep in the sampler."""
        meta, tensors = read_safetensors(path, InversionFileError, AGAIN)
        if meta.get("format") != FORMAT:
            raise InversionFileError(f"{path}: not an inversion saved by this pack (format {meta.get('format')!r})")
        missing = {"unconds", "sigmas", "noisy", "source"} - set(tensors)
        if meta.get("method") == "direct" and "pivots" not in tensors:
            missing.add("pivots")
        if missing:
            raise InversionFileError(f"{path}: the file lacks {sorted(missing)}; {AGAIN}")
        check_tensors(tensors, path, InversionFileError, AGAIN, dtypes=(torch.float32, torch.float64))
        try:
            inversion = cls(*(tensors[k].float() for k in ("unconds", "sigmas", "noisy", "source")),
                            float(meta["guidance"]), meta["method"], meta["scheduler"], int(meta["steps"]),
                            meta["model_fingerprint"], tensors["pivots"].float() if "pivots" in tensors else None,
                            meta.get("low_noise_fingerprint", ""), int(meta.get("switch_at_step", "0")))
        except (KeyError, ValueError) as e:
            raise InversionFileError(f"{path}: damaged metadata ({e}); {AGAIN}") from None
        problem = inversion.shape_problem()
        if problem:
            raise InversionFileError(f"{path}: {problem}; {AGAIN}")
        return inversion

    def shape_problem(self) -> str | None:
        """What does not fit in this inversion's metadata and tensor shapes (None when all fits)."""
        if self.method not in METHODS:
            return f"unknown method {self.method!r} (expected one of {METHODS})"
        if not (self.steps >= 1 and math.isfinite(self.guidance) and self.guidance >= 0):
            return f"steps {self.steps} / guidance {self.guidance} out of range"
        if self.unconds.dim() != 3 or self.unconds.shape[0] < 1:
            return f"unconds has shape {list(self.unconds.shape)}, expected [steps, tokens, channels]"
        n = self.unconds.shape[0]
        if list(self.sigmas.shape) != [n + 1]:
            return f"sigmas has shape {list(self.sigmas.shape)}, expected [{n + 1}] for {n} steps of unconds"
        if bool((self.sigmas < 0).any()) or bool((self.sigmas[1:] > self.sigmas[:-1]).any()):
            return "sigmas is not a descending schedule of σ >= 0"
        if self.noisy.dim() not in (4, 5) or self.noisy.shape[0] != 1:
            return f"noisy has shape {list(self.noisy.shape)}, expected one latent [1, channels, height, width]"
        if self.source.shape != self.noisy.shape:
            return f"source has shape {list(self.source.shape)}, noisy {list(self.noisy.shape)}; they must match"
        switch = switch_problem(self.switch_at_step, n)
        if switch:
            return f"switch_at_step {switch}"
        if bool(self.switch_at_step) != bool(self.low_noise_fingerprint):
            return "switch_at_step and low_noise_fingerprint come together (two experts) or not at all"
        expected = [n + 1, *self.noisy.shape[1:]]
        if self.pivots is not None and list(self.pivots.shape) != expected:
            return f"pivots has shape {list(self.pivots.shape)}, expected {expected}"
        return None
