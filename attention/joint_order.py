"""Joint attentions that run ``[image (N), text (T)]`` instead of ``[text, image]`` (plain torch).

The MMDiT edit, its word maps and the probabilities edit read a joint attention text first. Some
models put the image first (HunyuanImage 2.1 on ComfyUI 0.3.64: ``flipped_img_txt``). Attention is
equivariant under a permutation of the tokens once RoPE is applied (the host applies it before the
attention call): permuting q, k, v and the mask permutes the output's rows the same way. So the
text-first overrides run on a rolled view of the call (:func:`text_first_view`), and the host's
attention, or the override another node put on the model, still gets the call as the host made it
(:func:`host_order_view`): the unedited rows come out bit for bit as without the edit.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .attention_call import AttentionCall, run_call


def _rolled(call: AttentionCall, shift: int, length: int) -> AttentionCall:
    """The attention call with its tokens rolled by ``shift`` (q, k, v, and the mask's query and key axes)."""
    q, k, v = (torch.roll(x, shift, call.token_axis) for x in (call.q, call.k, call.v))
    mask = call.mask
    if isinstance(mask, torch.Tensor):
        if mask.shape[-1] == length:  # over the keys
            mask = torch.roll(mask, shift, mask.ndim - 1)
        if mask.ndim >= 2 and mask.shape[-2] == length:  # over the queries
            mask = torch.roll(mask, shift, mask.ndim - 2)
    return call.with_tensors(q, k, v, mask=mask if isinstance(mask, torch.Tensor) else None)


class _RolledCall:
    """An override that hands a joint attention (``length`` tokens) to ``then`` (an override, or
    None: the host's function) with its tokens rolled by ``shift``, and rolls the output back;
    every other call is handed on as it is."""

    def __init__(self, then: Callable | None, shift: int, length: int):
        self.then, self.shift, self.length = then, shift, length

    def __deepcopy__(self, memo: dict) -> "_RolledCall":
        return self  # built per block call

    def __call__(self, func: Callable, *args: Any, **kwargs: Any) -> Any:
        call = AttentionCall.read(args, kwargs)
        if call is None or call.length != self.length:
            return run_call(func, args, kwargs, self.then)
        rolled = _rolled(call, self.shift, self.length)
        return torch.roll(rolled.run(func, self.then), -self.shift, rolled.output_token_axis)


def text_first_view(override: Callable, text_length: int, joint_length: int) -> Callable:
    """``override``, written for ``[text, image]``, on a host call laid out ``[image, text]``."""
    return _RolledCall(override, text_length, joint_length)


def host_order_view(previous: Callable | None, text_length: int, joint_length: int) -> Callable:
    """The host's attention (``previous``: an override already on the model, or None) as the
    text-first overrides call it: back in the host's ``[image, text]`` order."""
    return _RolledCall(previous, -text_length, joint_length)
