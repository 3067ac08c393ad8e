"""A cheap identity of a diffusion model's weights, stamped on what is made for one model (an
inversion, an embedding VAE) so that it can be matched with the model it meets later."""

from __future__ import annotations

import hashlib


def model_fingerprint(model) -> str:
    """16 hex digits identifying the UNet weights of ``model`` (a ComfyUI ModelPatcher: anything
    with ``model.model.diffusion_model``; duck-typed, so this module needs no ComfyUI).

    Sums of a few weight tensors to 3 significant digits: the same checkpoint gives the same
    fingerprint in fp16 and fp32. Saved files hold it, so changing the recipe orphans them.
    """
    params = list(model.model.diffusion_model.named_parameters())
    h = hashlib.sha1(type(model.model).__name__.encode())
    for name, p in params[:: max(1, len(params) // 8)]:
        h.update(f"{name}{tuple(p.shape)}{float(p.detach().double().abs().sum()):.3g}".encode())
    return h.hexdigest()[:16]
