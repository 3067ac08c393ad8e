"""Keep Outside Mask and Keep Mask Composite: edit a photo (with an instruction editor, a P2P edit,
anything that samples from its direct inversion) and keep everything outside a mask exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base.errors import PromptEditError
from ..inversion.comfy_keep import MASK_SOURCES, KeepOutsideMask, install
from .common import CATEGORY_INVERSION, INVERSION

KEEP_MASK = "KEEP_MASK"


class KeepOutsideMaskNode:
    DESCRIPTION = ("Keeps everything outside a mask exactly as the photo: at every step the edited items land back on "
                   "the direct inversion's path there, so their final latent equals the photo's outside the mask.")
    CATEGORY = CATEGORY_INVERSION
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "LATENT", KEEP_MASK)
    RETURN_NAMES = ("model", "latent", "keep")
    OUTPUT_TOOLTIPS = (
        "The patched model: apply this node last, right before KSamplerAdvanced (add_noise disable, euler).",
        "The latent to sample: the inversion's noisy latent as [source, edit] (a batch of one is repeated to two).",
        "The mask it kept outside, for 'Keep Mask Composite' after decoding.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": (
                    "The model after Apply Inversion (and any edit: P2P Attention Control, reference images, LoRAs).")}),
                "inversion": (INVERSION, {"tooltip": "A direct inversion of the photo ('Invert Image', method 'direct')."}),
                "latent": ("LATENT", {"tooltip": (
                    "The inversion's noisy latent, or P2P Prompts' batch of it (item 0 = the source).")}),
                "mask_from": (list(MASK_SOURCES), {"default": "mask", "tooltip": (
                    "mask: the MASK input (1 = edit); auto: where the edit's prediction departs from the source's "
                    "in the first steps (as DiffEdit does).")}),
                "threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "auto: the region edited is where the difference reaches this fraction of its maximum.")}),
                "auto_steps": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "auto: the fraction of the steps that run free while the difference is measured (at least one).")}),
                "dilation": ("INT", {"default": 1, "min": 0, "max": 64, "tooltip": (
                    "Grows the mask by this many latent pixels (8 or 16 image pixels each).")}),
                "feathering": ("INT", {"default": 1, "min": 0, "max": 64, "tooltip": (
                    "Softens the mask's edge outwards over this many latent pixels; beyond it the photo is kept exactly.")}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "mask_from 'mask': the region to edit (1), e.g. from Load Image's mask editor."}),
            },
        }

    def apply(self, model, inversion, latent, mask_from: str, threshold: float, auto_steps: float, dilation: int,
              feathering: int, mask=None):
        patched, keep = install(model, inversion, mask_from, mask, threshold, auto_steps, dilation, feathering)
        samples = latent["samples"]
        if samples.shape[0] == 1:
            latent = {**latent, "samples": samples.repeat((2,) + (1,) * (samples.ndim - 1))}
        return patched, latent, keep


def _pixel_masks(keep: KeepOutsideMask, images: torch.Tensor) -> torch.Tensor:
    """The kept mask per image of the decoded batch ``[B, H, W]`` (item 0, the source, keeps everything)."""
    if keep.mask is None:
        raise PromptEditError("keep: no mask was made yet; sample with the MODEL of this 'Keep Outside Mask' first")
    height, width = images.shape[1:3]
    masks = F.interpolate(keep.mask.float().cpu(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    edits = images.shape[0] - 1
    if masks.shape[0] not in (1, edits):
        raise PromptEditError(f"images: {images.shape[0]} images, but the mask was made for {masks.shape[0]} edits "
                              "plus the source; decode the latent of the sampler that used this 'Keep Outside Mask'")
    return torch.cat([torch.zeros(1, height, width), masks.expand(edits, height, width)])


class KeepMaskComposite:
    DESCRIPTION = ("Puts the photo's own pixels back outside the kept mask (byte for byte: the VAE's round trip "
                   "changes them otherwise), and shows the mask.")
    CATEGORY = CATEGORY_INVERSION
    FUNCTION = "composite"
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("images", "mask", "mask_preview")
    OUTPUT_TOOLTIPS = ("The decoded images with the photo outside the mask (as they are without a photo).",
                       "The mask per image in pixels (1 = edited; the source keeps everything).",
                       "The images with the kept region dimmed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "keep": (KEEP_MASK, {"tooltip": "From 'Keep Outside Mask'."}),
                "images": ("IMAGE", {"tooltip": "The sampler's latent, decoded (VAE Decode)."}),
            },
            "optional": {
                "photo": ("IMAGE", {"tooltip": "The photo that was inverted, at the images' size."}),
            },
        }

    def composite(self, keep, images, photo=None):
        masks = _pixel_masks(keep, images).to(images.device, images.dtype)
        m = masks.unsqueeze(-1)
        out = images
        if photo is not None:
            if tuple(photo.shape[1:]) != tuple(images.shape[1:]):
                raise PromptEditError(f"photo: {list(photo.shape[1:3])} pixels, the images {list(images.shape[1:3])}; "
                                      "connect the photo that was inverted, at its size")
            out = torch.where(m > 0, photo[:1] * (1 - m) + images * m, photo[:1].expand_as(images))
        return out, masks, images * (0.35 + 0.65 * m)
