"""Keep Outside Mask on a ComfyUI model: a post-CFG function that blends the edited items with the
direct inversion's path outside a mask (:mod:`.keep_outside`), and the per-run state it keeps for
'Keep Mask' (the masks it used).

The function runs after the guided prediction of each step, so it composes with whatever made the
prediction (Apply Inversion's source correction, P2P attention control, reference images, LoRAs).
With an automatic mask the first ``auto_until`` of the steps run free while the difference between
the edits' predictions and the source's is summed; the mask is fixed from that sum, and from the
next step on the outside lands back on the photo's path (one step suffices: the landing prediction
is computed from where the item is).
"""

from __future__ import annotations

import math

import torch

from ..base.errors import PromptEditError
from ..patching.comfy_model import set_outer_sample
from .comfy_patch import DirectInversionCorrection, check_latent_fits
from .direct import landing_prediction
from .keep_outside import difference_mask, kept_outside, latent_mask, spatial_difference
from .result import Inversion

WRAPPER_KEY = "prompt_edit_keep_outside"
MASK_SOURCES = ("mask", "auto")


class KeepOutsideMask:
    """Post-CFG function and its per-run state: the mask on the latent grid (``[1 or edits, 1, h, w]``),
    fixed at the start (``mask``) or after the first steps (``auto``)."""

    def __init__(self, inversion: Inversion, source: str, pixel_mask: torch.Tensor | None, threshold: float,
                 auto_until: float, dilation: int, feathering: int):
        self.inversion, self.source, self.pixel_mask = inversion, source, pixel_mask
        self.threshold, self.auto_until, self.dilation, self.feathering = threshold, auto_until, dilation, feathering
        self.mask: torch.Tensor | None = None
        self._difference: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> "KeepOutsideMask":
        return self  # in model_options (0.3.64's clone() deep-copies it): 'Keep Mask' reads this run's state

    @property
    def latent_hw(self) -> tuple[int, int]:
        return tuple(self.inversion.noisy.shape[-2:])

    def reset(self) -> None:
        """A new sampling run: the given mask on the latent grid, or none yet (auto)."""
        self._difference = None
        self.mask = None
        if self.source == "mask":
            self.mask = latent_mask(self.pixel_mask, self.latent_hw, self.dilation, self.feathering)

    def _auto_steps(self) -> int:
        """How many steps run free while the automatic mask is measured (at least one)."""
        return max(1, math.ceil(self.auto_until * self.inversion.steps))

    def __call__(self, args: dict) -> torch.Tensor:
        x, denoised = args["input"], args["denoised"]
        if x.shape[0] < 2:
            return denoised  # nothing but the source: nothing to keep
        sigma = float(args["sigma"].reshape(-1)[0])
        step = self.inversion.step_at(sigma)
        sigma_next = float(self.inversion.sigmas[step + 1])
        pivot = self.inversion.pivots[step + 1].to(x.device)
        if self.mask is None:
            source = landing_prediction(x[:1], sigma, sigma_next, pivot)
            difference = spatial_difference(denoised[1:], source)
            self._difference = difference if self._difference is None else self._difference + difference
            if step + 1 < self._auto_steps():
                return denoised
            self.mask = difference_mask(self._difference, self.threshold, self.dilation, self.feathering)
        return kept_outside(x, denoised, sigma, sigma_next, pivot, self.mask)


def install(model, inversion: Inversion, source: str, pixel_mask: torch.Tensor | None, threshold: float,
            auto_until: float, dilation: int, feathering: int):
    """``(patched clone of model, KeepOutsideMask)``; refuses what cannot keep the outside exact."""
    if inversion.method != "direct" or inversion.pivots is None:
        raise PromptEditError(
            f"inversion: Keep Outside Mask follows a direct inversion's path, and this one was made with method "
            f"'{inversion.method}'; invert the image with method 'direct'")
    if source not in MASK_SOURCES:
        raise PromptEditError(f"mask_from: {source!r} is not one of {list(MASK_SOURCES)}")
    if source == "mask" and pixel_mask is None:
        raise PromptEditError("mask: mask_from is 'mask' but no MASK is connected; connect one (e.g. from the "
                              "mask editor of Load Image) or choose mask_from 'auto'")
    check_latent_fits(inversion, model)
    keep = KeepOutsideMask(inversion, source, pixel_mask, threshold, auto_until, dilation, feathering)
    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(keep)

    def outer_sample(executor, *args, **kwargs):
        functions = executor.class_obj.model_options.get("sampler_post_cfg_function", [])
        if not functions or functions[-1] is not keep:
            raise PromptEditError(
                "Keep Outside Mask: a node applied after it changes the prediction again (another post-CFG "
                "function: P2P Local Blend, Apply Inversion, …), so the outside would not stay the photo; "
                "apply Keep Outside Mask last, right before the sampler")
        # Apply Inversion starts the sampler on the inversion (and checks the sampler walks its path back)
        if not any(isinstance(f, DirectInversionCorrection) and f.inversion is inversion for f in functions):
            raise PromptEditError(
                "Keep Outside Mask: the MODEL did not go through 'Apply Inversion' with this inversion, so the "
                "sampler would not start on the photo's path; connect Apply Inversion (the same inversion) before it")
        keep.reset()
        return executor(*args, **kwargs)

    set_outer_sample(patched, WRAPPER_KEY, outer_sample)
    return patched, keep
