"""One reader of ComfyUI's attention call, as an attention override receives it (plain torch).

ComfyUI calls ``optimized_attention(q, k, v, heads, mask=None, attn_precision=None,
skip_reshape=False, skip_output_reshape=False, transformer_options=…)``; an override installed in
``transformer_options["optimized_attention_override"]`` is called as ``override(func, *args,
**kwargs)`` with that call's arguments, positional or keyword as the model wrote them. The layout
of q, k, v and of the output follows the call: ``[B, H, L, D]`` where ``skip_reshape`` /
``skip_output_reshape`` is set (Flux, Qwen-Image on 0.33.0), else ``[B, L, H·D]`` (SD3, 0.3.64's
Qwen-Image). Every override of the pack (the joint qk and probabilities edits, the word-map
recorder, the image-first view, the wrapper route's layer gate) reads its call here, so a host
that moves an argument changes one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

_MASK_POSITION = 4  # (q, k, v, heads, mask, …)
_HEADS_POSITION = 3


@dataclass(frozen=True)
class AttentionCall:
    """The arguments of one host attention call, read without copying."""

    args: tuple
    kwargs: dict

    @classmethod
    def read(cls, args: tuple, kwargs: dict) -> "AttentionCall | None":
        """The call, or None where it is not an attention call on tensors (q, k, v first)."""
        if len(args) < 3 or not all(isinstance(x, torch.Tensor) for x in args[:3]):
            return None
        return cls(args, kwargs)

    @property
    def q(self) -> torch.Tensor:
        return self.args[0]

    @property
    def k(self) -> torch.Tensor:
        return self.args[1]

    @property
    def v(self) -> torch.Tensor:
        return self.args[2]

    @property
    def heads(self) -> int:
        return self.args[_HEADS_POSITION] if len(self.args) > _HEADS_POSITION else self.kwargs.get("heads")

    @property
    def token_axis(self) -> int:
        """The token axis of q, k, v: 2 in ``[B, H, L, D]``, 1 in ``[B, L, H·D]``."""
        return 2 if self.kwargs.get("skip_reshape", False) else 1

    @property
    def output_token_axis(self) -> int:
        """The token axis of the output: 2 when the host keeps it ``[B, H, L, D]``, else 1."""
        return 2 if self.kwargs.get("skip_output_reshape", False) else 1

    @property
    def length(self) -> int:
        """The number of query tokens."""
        return self.q.shape[self.token_axis]

    @property
    def options(self) -> dict:
        """The call's ``transformer_options`` (empty where the host passes none)."""
        return self.kwargs.get("transformer_options") or {}

    @property
    def mask(self) -> torch.Tensor | None:
        return self.args[_MASK_POSITION] if len(self.args) > _MASK_POSITION else self.kwargs.get("mask")

    def mask_4d(self) -> torch.Tensor | None:
        """The mask 4-D as the host's attention broadcasts it (``[L, L]`` → ``[1, 1, L, L]``;
        Qwen-Image's additive text mask ``[B, 1, L]`` → ``[B, 1, 1, L]``), or None."""
        mask = self.mask
        if mask is not None and mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask is not None and mask.ndim == 3:
            mask = mask.unsqueeze(1)
        return mask

    def heads_first(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (q, k or v of this call) as ``[B, H, L, D]``."""
        if self.token_axis == 2:
            return x
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def with_tensors(self, q: torch.Tensor | None = None, k: torch.Tensor | None = None,
                     v: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> "AttentionCall":
        """The same call with some of q, k, v and the mask replaced (each in the call's own layout)."""
        args = (q if q is not None else self.q, k if k is not None else self.k, v if v is not None else self.v)
        args += self.args[3:]
        kwargs = self.kwargs
        if mask is not None:
            if len(args) > _MASK_POSITION:
                args = args[:_MASK_POSITION] + (mask,) + args[_MASK_POSITION + 1:]
            else:
                kwargs = {**kwargs, "mask": mask}
        return AttentionCall(args, kwargs)

    def run(self, func: Callable, then: Callable | None = None) -> Any:
        """The call's result: through ``then`` (the override this one was layered on) or the host's ``func``."""
        if then is not None:
            return then(func, *self.args, **self.kwargs)
        return func(*self.args, **self.kwargs)


def run_call(func: Callable, args: tuple, kwargs: dict, then: Callable | None = None) -> Any:
    """A call that is not an attention call on tensors, handed on unchanged (see :meth:`AttentionCall.run`)."""
    return then(func, *args, **kwargs) if then is not None else func(*args, **kwargs)
