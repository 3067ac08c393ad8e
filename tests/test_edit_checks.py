"""The harness's edit checks (harness/edit_checks.py) fail where an edit is wrong: a moved source,
an edited item that did not move, and a threshold that is not well over the tolerance."""

from __future__ import annotations

import pytest
import torch

from harness.edit_checks import MIN_EDIT_CHANGE, ROUNDOFF_TOL, assert_edit_moves, relative_change


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(seed)) * 5


def test_a_right_edit_passes_and_reports_each_items_relative_change():
    plain = batch()
    edited = plain.clone()
    edited[0] += ROUNDOFF_TOL / 10  # roundoff on the source
    edited[1:] += torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    changes = assert_edit_moves(edited, plain)
    assert changes[0] <= ROUNDOFF_TOL and min(changes[1:]) > MIN_EDIT_CHANGE
    assert changes[1] == relative_change(edited[1], plain[1])


def test_a_moved_source_or_an_unmoved_edit_fails():
    plain = batch()
    moved_source = plain.clone()
    moved_source[0, 0, 0, 0] += 1.0
    moved_source[1:] += 1.0
    with pytest.raises(AssertionError, match="the source item .index 0. is not plain sampling"):
        assert_edit_moves(moved_source, plain)
    unmoved = plain.clone()
    unmoved[1] += 1.0
    unmoved[2] += 100 * ROUNDOFF_TOL  # not well over the roundoff at the sample's scale
    with pytest.raises(AssertionError, match=r"did not move item\(s\) \[2\]"):
        assert_edit_moves(unmoved, plain)
    other_source = plain.clone()
    other_source[:2] += 1.0
    assert_edit_moves(other_source, plain, source_index=2)


def test_thresholds_that_are_not_well_apart_or_batches_that_do_not_match_are_refused():
    plain = batch()
    with pytest.raises(ValueError, match="not well over tol"):
        assert_edit_moves(plain + 1, plain, min_relative=10 * ROUNDOFF_TOL)
    with pytest.raises(ValueError, match="must be batches of one shape"):
        assert_edit_moves(plain[:2], plain)
