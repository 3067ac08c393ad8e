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


def _roll_call(args: tuple, kwargs: dict, shift: int, length: int) -> tuple[tuple, dict]:
    """The attention call ``(q, k, v, heads, mask=None, …)`` with its tokens rolled by ``shift``."""
    axis = 2 if kwargs.get("skip_reshape", False) else 1  # [B, H, L, D] or [B, L, H·D]
    q, k, v = (torch.roll(x, shift, axis) for x in args[:3])
    args = (q, k, v) + args[3:]
    mask_in_args = len(args) > 4
    mask = args[4] if mask_in_args else kwargs.get("mask")
    if isinstance(mask, torch.Tensor):
        if mask.shape[-1] == length:  # over the keys
            mask = torch.roll(mask, shift, mask.ndim - 1)
        if mask.ndim >= 2 and mask.shape[-2] == length:  # over the queries
            mask = torch.roll(mask, shift, mask.ndim - 2)
        if mask_in_args:
            args = args[:4] + (mask,) + args[5:]
        else:
            kwargs = {**kwargs, "mask": mask}
    return args, kwargs


class _RolledCall:
    """An override that hands a joint attention (``length`` tokens) to ``then`` (an override, or
    None: the host's function) with its tokens rolled by ``shift``, and rolls the output back;
    every other call is handed on as it is."""

    def __init__(self, then: Callable | None, shift: int, length: int):
        self.then, self.shift, self.length = then, shift, length

    def __deepcopy__(self, memo: dict) -> "_RolledCall":
        return self  # built per block call

    def _run(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        return func(*args, **kwargs) if self.then is None else self.then(func, *args, **kwargs)

    def __call__(self, func: Callable, *args: Any, **kwargs: Any) -> Any:
        axis = 2 if kwargs.get("skip_reshape", False) else 1
        if len(args) < 3 or not isinstance(args[0], torch.Tensor) or args[0].shape[axis] != self.length:
            return self._run(func, args, kwargs)
        args, kwargs = _roll_call(args, kwargs, self.shift, self.length)
        out = self._run(func, args, kwargs)
        out_axis = 2 if kwargs.get("skip_output_reshape", False) else 1
        return torch.roll(out, -self.shift, out_axis)


def text_first_view(override: Callable, text_length: int, joint_length: int) -> Callable:
    """``override``, written for ``[text, image]``, on a host call laid out ``[image, text]``."""
    return _RolledCall(override, text_length, joint_length)


def host_order_view(previous: Callable | None, text_length: int, joint_length: int) -> Callable:
    """The host's attention (``previous``: an override already on the model, or None) as the
    text-first overrides call it: back in the host's ``[image, text]`` order."""
    return _RolledCall(previous, -text_length, joint_length)
