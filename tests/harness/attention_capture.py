"""Another node's attention override on a model, as the family tests use it: it records every
attention call it sees (its step, chunks, q and k as the host handed them) and runs the attention
it was given. Outside an edit it sees every call; layered under the edit's override (the edit
installs on top of it), the joint calls after the edit changed them."""

from __future__ import annotations

from typing import NamedTuple

import torch


class AttentionCall(NamedTuple):
    step: int | None  # the sampling step (None outside sampling)
    cond_or_uncond: tuple[int, ...]  # the call's chunks, 0 = conditional
    token_axis: int  # 2 where the host hands [B, H, L, D] (skip_reshape), else 1: [B, L, H·D]
    q: torch.Tensor
    k: torch.Tensor

    @property
    def length(self) -> int:
        """The call's token count (text + image in a joint attention)."""
        return self.q.shape[self.token_axis]


class Capture:
    """Records each attention call as an :class:`AttentionCall` (q, k copied)."""

    def __init__(self):
        self.calls: list[AttentionCall] = []

    def __deepcopy__(self, memo):
        return self  # 0.3.64's ModelPatcher.clone() deep-copies model_options

    def __call__(self, func, *args, **kwargs):
        from comfyui_prompt_edit.base.sigma_steps import step_at

        opts = kwargs.get("transformer_options") or {}
        step = step_at(float(opts["sigmas"].reshape(-1)[0]), opts["sample_sigmas"]) if "sigmas" in opts else None
        axis = 2 if kwargs.get("skip_reshape", False) else 1
        self.calls.append(AttentionCall(step, tuple(opts.get("cond_or_uncond", [])), axis, args[0].clone(),
                                        args[1].clone()))
        return func(*args, **kwargs)


def with_capture(model):
    """``(a clone of model with a Capture as its attention override, the Capture)``."""
    capture, patched = Capture(), model.clone()
    patched.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = capture
    return patched, capture
