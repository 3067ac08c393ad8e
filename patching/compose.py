"""An attention replace patch that edits where it must and otherwise keeps the patch it replaced.

ComfyUI keeps one replace patch per attention layer, so installing one normally drops whatever
another node (SAG, an IPAdapter-style pack, ...) put there. :class:`ComposedAttention` calls that
earlier patch as the attention function it wraps instead:

- where the pack does not edit a call, the earlier patch's output is returned unchanged;
- where it edits, the earlier patch runs on the whole batch (so patches that record or index by
  batch layout, like SAG, see the batch they expect), and the pack's edit is added to its output
  as a change: ``theirs + (edited - plain)``. For patches that add a term to the text attention
  (IPAdapter-style: ``attention(q, k, v) + w * attention(q, k_image, v_image)``) this is exactly
  the edited attention plus their term; on rows the pack leaves alone the change is zero.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

AttentionPatch = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]
EditedAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], Optional[torch.Tensor]]
PlainAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, dict], torch.Tensor]


class ComposedAttention:
    """attn1/attn2 replace patch: ``edited(q, k, v, opts)`` (None = not edited in this call) on
    top of ``previous`` (the replace patch that was installed, or None for the host's attention)."""

    def __init__(self, family: str, owner: object, edited: EditedAttention, plain: PlainAttention,
                 previous: AttentionPatch | None = None):
        self.family, self.owner = family, owner  # the node that installed it, and its state
        self.edited, self.plain, self.previous = edited, plain, previous

    def __deepcopy__(self, memo: dict) -> "ComposedAttention":
        return self  # in model_options, which 0.3.64's clone() deep-copies: the owner's per-run state stays shared

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict,
                 **host_keywords) -> torch.Tensor:
        # keywords a newer host may add to the call are passed on to what this patch chains to
        edited = self.edited(q, k, v, extra_options)
        if self.previous is None:
            if edited is not None:
                return edited
            return self.plain(q, k, v, extra_options["n_heads"], extra_options, **host_keywords)
        theirs = self.previous(q, k, v, extra_options, **host_keywords)
        if edited is None:
            return theirs
        return theirs + (edited - self.plain(q, k, v, extra_options["n_heads"], extra_options, **host_keywords))


def describe_patch(function: object) -> str:
    """A readable name for another node's patch: its module's last part and qualified name say
    which node made it (e.g. ``nodes_sag.SelfAttentionGuidance.execute.attn_and_record``; hosts
    load some node modules by file path, so the module may be a path)."""
    if isinstance(function, (ComposedAttention, ComposedBlock)):
        return function.family
    target = function if hasattr(function, "__qualname__") else type(function)
    module = str(getattr(target, "__module__", "?")).replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    return f"{module}.{target.__qualname__}".replace(".<locals>", "")


class ContainerPassingOverride:
    """An ``optimized_attention_override`` that runs the pack's override ``pack_override(func, *args,
    **kwargs)`` on top of ``previous``, an override of another node that takes attention tensor
    containers (it has a ``container_function``, e.g. a kernel that quantises q, k, v and frees them).

    Newer hosts (ComfyUI ≥ 0.35) call attention with q, k, v wrapped in single-owner containers
    (``.peek()``, ``.take()``) and hand them, still wrapped, to an override's ``container_function``;
    an override without one gets them taken (plain tensors). This one has a ``container_function``
    exactly when ``previous`` has, so the host keeps the containers for it: the pack's override
    runs on the taken tensors, and what it hands on reaches ``previous.container_function`` in fresh
    containers of the host's kind, as the host itself would have called it. Plain-tensor calls
    (older hosts, call sites without containers) reach ``previous`` as an ordinary override."""

    def __init__(self, pack_override: Callable, previous: Callable):
        self.pack_override, self.previous = pack_override, previous
        self.container_function = self._with_containers

    def __call__(self, func: Callable, *args, **kwargs):
        def previous(*a, **kw):
            return self.previous(func, *a, **kw)

        return self.pack_override(previous, *args, **kwargs)

    def _with_containers(self, *args, **kwargs):
        container = type(args[0])
        tensors = tuple(c.take() for c in args[:3])

        def previous(*a, **kw):
            return self.previous.container_function(*(container(t) for t in a[:3]), *a[3:], **kw)

        return self.pack_override(previous, *tensors, *args[3:], **kwargs)


def takes_containers(override: object) -> bool:
    """Whether the host hands ``override`` its attention inputs as tensor containers (newer hosts)."""
    return override is not None and getattr(override, "container_function", None) is not None


BlockPatch = Callable[[dict, dict], dict]
BlockArguments = Callable[[str, int, dict], Optional[dict]]


class ComposedBlock:
    """``patches_replace["dit"]`` patch of one transformer block (Flux, SD3): ``arguments(kind,
    index, args)`` gives the block's arguments for this call (None = as they are), with which the
    patch that was on the block runs (``previous``), or the block itself. The pack changes only what
    the block is called with, so the earlier patch keeps doing whatever it did around the block."""

    def __init__(self, family: str, owner: object, kind: str, index: int, arguments: BlockArguments,
                 previous: BlockPatch | None = None):
        self.family, self.owner = family, owner
        self.kind, self.index, self.arguments, self.previous = kind, index, arguments, previous

    def __deepcopy__(self, memo: dict) -> "ComposedBlock":
        return self  # in model_options, which 0.3.64's clone() deep-copies: the owner's per-run state stays shared

    def __call__(self, args: dict, extra: dict) -> dict:
        changed = self.arguments(self.kind, self.index, args)
        if changed is not None:
            args = changed
        if self.previous is not None:
            return self.previous(args, extra)
        return extra["original_block"](args)
