"""Checks that a Prompt-to-Prompt edit did what it must, for any model family's tests: the source
item is plain sampling (to float32 roundoff) and every edited item moved by well over that roundoff.

Both compare samples by their largest difference relative to the reference's largest magnitude
(at least 1, so that a sample near zero is not compared by its roundoff alone):
:func:`relative_change`.
"""

from __future__ import annotations

import torch

ROUNDOFF_TOL = 1e-5
"""What float32 roundoff leaves between two samplings of one prompt that must be equal (relative
change). Measured with the tiny Flux-dev / Flux-schnell / SD3 / SD3.5 (q/k norm weights 3), 10 euler
steps: the same prompt sampled in a batch of 1 and a batch of 3 differs by ≤ 1e-6 at cfg 1 and up to
3.5e-6 at cfg 2.5 (flux-dev), 1.2e-6 elsewhere, with no edit at all: the matmul kernels sum in another
order per batch size (float32's epsilon is 1.2e-7), and ten steps of a sharply attending transformer,
with cfg scaling the cond-uncond difference, amplify that. 1e-5 is three times the largest measured;
an edit moves an item by 2e-2 or more (see MIN_EDIT_CHANGE), so a wrong item cannot pass as equal."""

MIN_EDIT_CHANGE = 100 * ROUNDOFF_TOL
"""The least relative change an edit must make to an edited item: a hundred times the roundoff, so
that an edit that does nothing (or next to nothing, as with the old near-uniform tiny attention:
4e-8) fails. Measured with the tiny MMDiT families, the edit moves the edited item by 5e-2 … 5e-1
(qk, first 20 % of the steps) and 9e-2 … 2e-1 (probabilities)."""


def relative_change(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |actual - reference| / max(max |reference|, 1)``."""
    scale = reference.abs().max().clamp_min(1.0)
    return float((actual - reference).abs().max() / scale)


def assert_same(actual: torch.Tensor, expected: torch.Tensor, tol: float = ROUNDOFF_TOL) -> None:
    """``actual`` equals ``expected`` up to ``tol`` relative to ``expected``'s largest magnitude."""
    scale = expected.abs().max().clamp_min(1.0)
    torch.testing.assert_close(actual / scale, expected / scale, atol=tol, rtol=0)


def assert_edit_moves(edited: torch.Tensor, plain: torch.Tensor, source_index: int = 0,
                      min_relative: float = MIN_EDIT_CHANGE, tol: float = ROUNDOFF_TOL) -> list[float]:
    """Assert that an edited batch (``edited``: [B, ...], item ``source_index`` the source) keeps its
    source as plain sampling and moves every other item by well over the roundoff.

    ``plain``: the same prompts sampled without the edit, [B, ...] as ``edited`` (best in the same
    batch, whose roundoff is the edit's). Every edited item must differ from its plain sample by at
    least ``min_relative`` (relative change, :func:`relative_change`), the source by at most
    ``tol``. Pass only items whose prompts differ from the source's (an item with the source's own
    prompt is not moved by a correct edit). ``min_relative`` must be at least 100 × ``tol``, so
    that "moved" and "equal" stay far apart. Returns each item's relative change (the source's
    included), for a message or a report.
    """
    if edited.shape != plain.shape or edited.shape[0] < 2:
        raise ValueError(f"edited {tuple(edited.shape)} and plain {tuple(plain.shape)} must be batches of one "
                         "shape with the source and at least one edited item")
    if min_relative < 100 * tol:
        raise ValueError(f"min_relative {min_relative:g} is not well over tol {tol:g}: give at least 100 × tol")
    changes = [relative_change(edited[i], plain[i]) for i in range(edited.shape[0])]
    assert changes[source_index] <= tol, (
        f"the source item (index {source_index}) is not plain sampling: relative change {changes[source_index]:.2e} "
        f"> {tol:g}; all items: {_listed(changes)}")
    still = [i for i, change in enumerate(changes) if i != source_index and change < min_relative]
    assert not still, (f"the edit did not move item(s) {still} by {min_relative:g} (relative change); "
                       f"all items: {_listed(changes)}")
    return changes


def _listed(changes: list[float]) -> str:
    return ", ".join(f"{c:.2e}" for c in changes)
