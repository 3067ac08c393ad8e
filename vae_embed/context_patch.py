"""A cross-attention context patch (ComfyUI's ``attn2_patch`` signature, no ComfyUI import) that
replaces chosen batch items' text or null-text context by embedding-VAE draws at every step."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..base.sigma_steps import step_at
from ..patching.sampling_call import chunk_rows
from .sampling import VAEDraws


class SampledContextPatch:
    """Replace the context rows of ``items`` in the ``chunk`` (COND or UNCOND) part of every UNet call.

    A draw is computed once per UNet call and shared by all its attention layers. ``timestep_of``
    maps σ to the model timestep (ComfyUI's ``model_sampling.timestep``).
    """

    def __init__(self, draws: VAEDraws, items: Sequence[int], chunk: int,
                 timestep_of: Callable[[torch.Tensor], torch.Tensor]):
        self.draws, self.items, self.chunk, self.timestep_of = draws, list(items), chunk, timestep_of
        self._last: tuple[tuple, torch.Tensor] | None = None

    def __deepcopy__(self, memo: dict) -> "SampledContextPatch":
        return self  # in model_options (0.3.64's clone() deep-copies it): shares the VAE and its per-call cache

    def __call__(self, n, context, value, extra_options: dict):
        chunks, sigmas = extra_options.get("cond_or_uncond"), extra_options.get("sigmas")
        if not chunks or sigmas is None or self.chunk not in chunks:
            return n, context, value
        key = (context.data_ptr(), tuple(context.shape), float(sigmas.reshape(-1)[0]), tuple(chunks))
        if self._last is None or self._last[0] != key:
            self._last = (key, self._replace(context, extra_options, sigmas.reshape(-1)[:1], extra_options.get("sample_sigmas")))
        new_context = self._last[1]
        return n, new_context, new_context if value is context else value

    def _replace(self, context: torch.Tensor, extra_options: dict, sigma: torch.Tensor, sample_sigmas) -> torch.Tensor:
        chunks = chunk_rows(extra_options, context.shape[0])
        size = chunks[0][0].stop
        items = [i for i in self.items if i < size]
        out = context.clone()
        if not items:
            return out
        step = 0 if sample_sigmas is None or len(sample_sigmas) < 2 else step_at(float(sigma), sample_sigmas)
        timestep = self.timestep_of(sigma)
        for rows, chunk in chunks:
            if chunk == self.chunk:
                item_rows = [rows.start + i for i in items]
                out[item_rows] = self.draws.sample(context[item_rows], items, step, timestep)
        return out
