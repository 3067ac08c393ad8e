"""The edited attention of one Prompt-to-Prompt group (item 0 = source, items 1..E = edits).

Two implementations of the same maths (see :mod:`.edit_plan` for the coefficients):

* **fast**: every edit is linear in the probabilities, so it moves onto the values and runs
  through the host's fused attention, never materialising ``M``:
  ``out_e = attn(q_s, k_s, A·(c_src ⊙ v_e)) + attn(q_e, k_e, c_own ⊙ v_e)``;
  self-attention injection is ``attn(q_s, k_s, v_e)``.
* **reference**: materialises ``M = softmax(q kᵀ / √d)`` per head and edits it exactly as the
  Prompt-to-Prompt paper does. Slow and memory hungry; it exists to check the fast path.

Tensors are ``[B, tokens, heads·dim]`` as ComfyUI hands them to an attention replace patch. The
conditioning may reach the layer tiled ``r`` times along the key axis (ComfyUI repeats conds to a
common length); tiling does not change attention, and both paths handle it per tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..base.errors import PromptEditError
from .cross_step import CrossStep

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _per_tile(v: torch.Tensor, num_columns: int) -> torch.Tensor:
    """``[..., r·N, F]`` → ``[..., r, N, F]``."""
    r = v.shape[-2] // num_columns
    if r * num_columns != v.shape[-2]:
        raise PromptEditError(
            f"attention layer has {v.shape[-2]} key tokens, not a multiple of the "
            f"{num_columns} columns of the Prompt-to-Prompt prompts"
        )
    return v.unflatten(-2, (r, num_columns))


def _mapped_values(step: CrossStep, v_edits: torch.Tensor) -> torch.Tensor:
    """``A · (c_src ⊙ v_e)`` for every edit, tile by tile: ``[E, r·N, F]``."""
    n = step.c_src.shape[-1]
    tiles = _per_tile(v_edits, n) * step.c_src[:, None, :, None]
    return torch.einsum("ewn,ernf->erwf", step.mapper, tiles).flatten(1, 2)


def _scaled_values(coef: torch.Tensor, v_edits: torch.Tensor) -> torch.Tensor:
    n = coef.shape[-1]
    return (_per_tile(v_edits, n) * coef[:, None, :, None]).flatten(1, 2)


@dataclass
class FusedBatch:
    """Inputs of one fused attention call, and how to fold its output back to the group's rows.

    Building batches instead of calling the kernel lets the controller put every chunk of a UNet
    call (unconditional rows and edited groups) into a single kernel launch.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    fold: Callable[[torch.Tensor], torch.Tensor]

    def run(self, attention: AttentionFn) -> torch.Tensor:
        return self.fold(attention(self.q, self.k, self.v))


def plain_batch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> FusedBatch:
    return FusedBatch(q, k, v, lambda out: out)


def fast_cross_batch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, step: CrossStep) -> FusedBatch:
    """Edited cross-attention of one group as one fused batch."""
    edits = q.shape[0] - 1
    parts_q, parts_k, parts_v = [q[:1]], [k[:1]], [v[:1]]
    if step.use_src:
        parts_q.append(q[:1].expand(edits, -1, -1))
        parts_k.append(k[:1].expand(edits, -1, -1))
        parts_v.append(_mapped_values(step, v[1:]))
    if step.use_own:
        parts_q.append(q[1:])
        parts_k.append(k[1:])
        parts_v.append(_scaled_values(step.c_own, v[1:]))

    def fold(out: torch.Tensor) -> torch.Tensor:
        edited = out[1 : 1 + edits] if step.use_src else torch.zeros_like(out[:edits])
        if step.use_own:
            edited = edited + out[-edits:]
        return torch.cat([out[:1], edited])

    return FusedBatch(torch.cat(parts_q), torch.cat(parts_k), torch.cat(parts_v), fold)


def fast_self_batch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> FusedBatch:
    """Self-attention injection: every item attends with the source's probabilities."""
    b = q.shape[0]
    return plain_batch(q[:1].expand(b, -1, -1), k[:1].expand(b, -1, -1), v)


def run_fused(batches: list[FusedBatch], attention: AttentionFn) -> torch.Tensor:
    """Run several batches through one kernel call and concatenate their folded outputs."""
    if len(batches) == 1:
        return batches[0].run(attention)
    out = attention(torch.cat([b.q for b in batches]), torch.cat([b.k for b in batches]), torch.cat([b.v for b in batches]))
    folded, start = [], 0
    for b in batches:
        folded.append(b.fold(out[start : start + b.q.shape[0]]))
        start += b.q.shape[0]
    return torch.cat(folded)


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax probabilities ``[B, heads, Nq, Nk]`` in fp32 (SD2.x needs fp32; it is cheap here)."""
    b, nq, hd = q.shape
    d = hd // heads
    qh = q.float().reshape(b, nq, heads, d).transpose(1, 2)
    kh = k.float().reshape(b, k.shape[1], heads, d).transpose(1, 2)
    return torch.softmax(qh @ kh.transpose(-1, -2) * d**-0.5, dim=-1)


def folded_probs(probs: torch.Tensor, num_columns: int) -> torch.Tensor:
    """Sum the key tiles back to the prompts' ``num_columns`` columns."""
    return _per_tile(probs.unsqueeze(-1), num_columns).squeeze(-1).sum(-2)


def column_probs(q: torch.Tensor, k: torch.Tensor, heads: int, num_columns: int,
                 columns: tuple[int, ...]) -> torch.Tensor:
    """Head-averaged probabilities ``[B, Nq, len(columns)]`` of the prompts' ``columns`` only.

    The same numbers as ``folded_probs(attention_probs(q, k, heads), num_columns).mean(1)`` at those
    columns, computed one head at a time: the softmax still spans every key, but only one head's
    ``[B, Nq, Nk]`` exists at once and only the wanted columns are kept. A video model's maps would
    otherwise be ``heads × tokens × 512`` per call and ``tokens × 512`` per step stored (Wan)."""
    index = torch.tensor(columns, device=q.device, dtype=torch.long)
    b, nq, hd = q.shape
    d = hd // heads
    total = torch.zeros(b, nq, len(columns), device=q.device, dtype=torch.float32)
    for h in range(heads):
        qh = q[..., h * d:(h + 1) * d].float()
        kh = k[..., h * d:(h + 1) * d].float()
        probs = torch.softmax(qh @ kh.transpose(-1, -2) * d**-0.5, dim=-1)  # [B, Nq, Nk]
        total += folded_probs(probs.unsqueeze(1), num_columns).squeeze(1).index_select(-1, index)
    return total / heads


def _apply_probs(probs: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """``probs [B, h, Nq, N] @ v [B, N, h·d]`` → ``[B, Nq, h·d]``."""
    b, n, hd = v.shape
    vh = v.float().reshape(b, n, heads, hd // heads).transpose(1, 2)
    return (probs @ vh).transpose(1, 2).reshape(b, probs.shape[2], hd)


def reference_cross_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, step: CrossStep
) -> torch.Tensor:
    """The paper's edit on materialised probabilities (``M_new = c_src·(M_s A) + c_own·M_e``)."""
    n = step.c_src.shape[-1]
    probs = folded_probs(attention_probs(q, k, heads), n)  # [B, h, Nq, N]
    mapper, c_src, c_own = step.mapper.float(), step.c_src.float(), step.c_own.float()
    from_source = torch.einsum("hqw,ewn->ehqn", probs[0], mapper)
    edited = from_source * c_src[:, None, None, :] + probs[1:] * c_own[:, None, None, :]
    out = _apply_probs(torch.cat([probs[:1], edited]), v[:, :n], heads)
    return out.to(q.dtype)


def reference_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    probs = attention_probs(q[:1], k[:1], heads).expand(q.shape[0], -1, -1, -1)
    return _apply_probs(probs, v, heads).to(q.dtype)
