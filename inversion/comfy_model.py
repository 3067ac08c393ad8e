"""ComfyUI side of the inversion (and of training an embedding VAE): σ schedules, models loaded for
gradients, and the model as a differentiable ε function.

Nodes run under ``torch.inference_mode()``; gradients through the UNet need
``torch.inference_mode(False)`` and weights that are not inference tensors: after
the model is loaded, every inference-mode parameter and buffer is replaced by a normal clone
(same values), which later inference-mode sampling uses as before.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import comfy.model_management
import comfy.samplers
import torch

from ..families import find_family
from .ddim import InputScaling, PairedEps, UncondEps


def sampling_sigmas(model, scheduler: str, steps: int) -> torch.Tensor:
    """The σ list the stock sampler walks for ``scheduler``/``steps`` (ddim_uniform may add one step)."""
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).float().cpu()


def input_scaling(model) -> InputScaling | None:
    """The model's input scaling ``c_in(σ)`` (what ``apply_model`` multiplies the latent by, as its
    model_sampling's ``calculate_input`` computes it) for :func:`~.ddim.ddim_invert`; None where it
    is 1 (flow models: Flux, SD3), so their inversion stays as it is."""
    model_sampling = model.get_model_object("model_sampling")

    def c_in(sigma: torch.Tensor) -> torch.Tensor:
        return model_sampling.calculate_input(sigma.reshape(1), torch.ones(1, 1, device=sigma.device)).reshape(())

    probe = torch.ones(1)
    return None if torch.equal(c_in(probe), torch.ones(())) else c_in


def _release_inference_tensors(module: torch.nn.Module) -> None:
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and p.is_inference():
                sub._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
        for name, b in list(sub._buffers.items()):
            if b is not None and b.is_inference():
                sub._buffers[name] = b.clone()


def load_for_gradients(model) -> None:
    """Load the model on its device, frozen, with weights usable in an autograd graph."""
    comfy.model_management.load_models_gpu([model], memory_required=0, force_full_load=True)
    model.model.requires_grad_(False)
    with torch.inference_mode(False):
        _release_inference_tensors(model.model)


def _copy_if_differentiated(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.clone() if tensor.requires_grad else tensor


def _as_saved(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@contextmanager
def gradients_through(model, *others) -> Iterator[torch.device]:
    """Leave the node's inference mode and load ``model`` (and ``others``: ModelPatchers such as a
    VAE's, a CLIP's) frozen, with weights usable in an autograd graph; yields ``model``'s device.
    Inputs made in inference mode must be copied (:func:`autograd_copy`) before they meet it.
    Hosts with ``model_management.in_training`` (0.33.0) set it meanwhile, as their training node
    does: their RoPE kernel (Flux-style blocks, e.g. HunyuanImage 2.1) has no backward otherwise, nor
    NextDiT's (Z-Image, Lumina 2) fused RMSNorm and RoPE.
    A model whose blocks add in place into tensors autograd saved (its family's ``updates_in_place``)
    gets copies of the saved activations (not of the frozen weights) instead."""
    training = getattr(comfy.model_management, "in_training", None)
    family = find_family(model)
    saved_copies = (torch.autograd.graph.saved_tensors_hooks(_copy_if_differentiated, _as_saved)
                    if family is not None and family.updates_in_place else nullcontext())
    with torch.inference_mode(False), saved_copies:
        for patcher in (model, *others):
            load_for_gradients(patcher)
        if training is not None:
            comfy.model_management.in_training = True
        try:
            yield model.load_device
        finally:
            if training is not None:
                comfy.model_management.in_training = training


def autograd_copy(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An fp32 copy of ``tensor`` on ``device`` that can enter autograd (a tensor made in inference
    mode cannot, even where no gradient flows through it)."""
    return tensor.clone().float().to(device)


def model_space_latent(model, samples: torch.Tensor) -> torch.Tensor:
    """A LATENT's ``samples`` in the model's latent space (scale factor applied) on its device, as
    an :func:`autograd_copy`."""
    return model.model.process_latent_in(autograd_copy(samples, model.load_device))


def _extra_inputs(model, conditioning_extras: dict, latent_shape: torch.Size,
                  context: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The model's extra inputs for a CONDITIONING entry's dict (e.g. SDXL's ``y``), as the sampler
    builds them, with the entry's ``context`` as ``cross_attn`` (Lumina 2 / Z-Image derive their
    ``num_tokens`` from it); constants (``num_tokens``) stay Python values."""
    device = model.load_device
    params = dict(conditioning_extras)
    params.update(device=device, noise=torch.zeros(latent_shape, device=device))
    params.setdefault("width", latent_shape[-1] * 8)
    params.setdefault("height", latent_shape[-2] * 8)
    if context is not None:
        params["cross_attn"] = context
    return {k: v.cond.to(device) if torch.is_tensor(v.cond) else v.cond
            for k, v in model.model.extra_conds(**params).items() if k != "c_crossattn"}


def _batched(value, batch: int):
    return value.expand(batch, *value.shape[1:]) if torch.is_tensor(value) else value


def eps_function(model, conditioning_extras: dict, latent_shape: torch.Size) -> UncondEps:
    """``ε(x, σ, context)`` of a loaded ComfyUI model.

    ``conditioning_extras`` is a CONDITIONING entry's dict (SDXL's pooled output, sizes, …); it is
    turned into the model's extra inputs (e.g. SDXL's ``y``) once, as the sampler would.
    """
    base = model.model
    device = model.load_device
    by_length: dict[int, dict] = {}  # the extra inputs per context length (a swapped context may differ)
    dtype = base.get_dtype()

    def eps(x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x, sigma = x.to(device), sigma.to(device)
        batch = x.shape[0]
        if context.shape[-2] not in by_length:
            by_length[context.shape[-2]] = _extra_inputs(model, conditioning_extras, latent_shape, context[:1])
        inputs = {k: _batched(v, batch) for k, v in by_length[context.shape[-2]].items()}
        denoised = base.apply_model(x, sigma.expand(batch), c_crossattn=context.to(device, dtype).expand(batch, -1, -1),
                                    transformer_options={}, **inputs)
        return (x - denoised) / sigma.reshape(-1, *([1] * (x.dim() - 1)))

    return eps


def paired_eps_function(model, extras_a: dict, extras_b: dict, latent_shape: torch.Size,
                        context_a: torch.Tensor | None = None, context_b: torch.Tensor | None = None) -> PairedEps | None:
    """``(ε_a, ε_b) = f(x, σ, context_a, context_b)`` in one batch-2 model call (cheaper than two
    calls, most of all where per-op overhead dominates), or None when the two conditionings'
    extra inputs cannot share a batch (``context_a`` / ``context_b``: the contexts it will get,
    for the inputs derived from them)."""
    base, device = model.model, model.load_device
    a = _extra_inputs(model, extras_a, latent_shape, context_a)
    b = _extra_inputs(model, extras_b, latent_shape, context_b)

    def shares(x, y) -> bool:
        return x.shape == y.shape if torch.is_tensor(x) and torch.is_tensor(y) else x == y

    if a.keys() != b.keys() or not all(shares(a[k], b[k]) for k in a):
        return None
    inputs = {k: torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else a[k] for k in a}
    dtype = base.get_dtype()

    def eps_pair(x: torch.Tensor, sigma: torch.Tensor, context_a: torch.Tensor, context_b: torch.Tensor):
        x, sigma = x.to(device).expand(2, *x.shape[1:]), sigma.to(device).expand(2)
        context = torch.cat([context_a.to(device, dtype), context_b.to(device, dtype)])
        denoised = base.apply_model(x, sigma, c_crossattn=context, transformer_options={}, **inputs)
        eps = (x - denoised) / sigma.reshape(-1, *([1] * (x.dim() - 1)))
        return eps[:1], eps[1:]

    return eps_pair
