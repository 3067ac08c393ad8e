"""The paper's training losses besides KL (in model.py): cyclical KL annealing, the CLIP loss with
cross-matched pairs (eq. 2) and the diversity loss (eq. 3)."""

from __future__ import annotations

import torch

from ..base.errors import PromptEditError


def cyclical_beta(step: int, total: int, cycles: int = 4, ramp: float = 0.5) -> float:
    """Cyclical KL weight (Fu et al.): each of ``cycles`` equal periods ramps linearly from 0 to 1
    over its first ``ramp`` share, then holds 1; so the KL term cannot collapse the latent early."""
    if total <= 0 or cycles <= 0:
        return 1.0
    period = total / cycles
    phase = (step % period) / period
    return min(1.0, phase / ramp) if ramp > 0 else 1.0


def clip_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity of feature rows, per row."""
    return 1.0 - torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def cross_matched_clip_loss(image_varied: torch.Tensor, text_edit: torch.Tensor, image_edit: torch.Tensor,
                            text_varied: torch.Tensor, weight: float) -> torch.Tensor:
    """Eq. 2: ``λ·D(E_I(I''), C') + (1 − λ)·D(E_I(I'), C'')``, averaged over the batch: the image of
    the sampled embedding against the edit prompt, and the edit's image against the sampled
    embedding (all in CLIP's joint space)."""
    return (weight * clip_distance(image_varied, text_edit) + (1 - weight) * clip_distance(image_edit, text_varied)).mean()


def derangement(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation with no fixed point (``Q_i ≠ P_i``), by shifting a shuffled cycle."""
    if count < 2:
        raise PromptEditError(f"the diversity loss needs at least 2 samples, got {count}")
    order = torch.randperm(count, generator=generator)
    result = torch.empty(count, dtype=torch.long)
    result[order] = order.roll(1)
    return result


def diversity_loss(features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 3: mean L1 distance between the perceptual features of each sample and a deranged other
    (per element, so its scale does not depend on the feature size). Weighted by γ < 0 it pushes
    samples apart."""
    partner = derangement(features.shape[0], generator)
    return (features - features[partner]).abs().flatten(1).mean(dim=1).mean()
