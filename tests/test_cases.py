"""The comparison helper every equivalence test relies on must not let a NaN through."""

from __future__ import annotations

import numpy as np

from tests.cases import max_rel_diff


def test_max_rel_diff_counts_a_nan_against_a_number_as_infinitely_far():
    assert max_rel_diff([np.array([1.0, np.nan])], [np.array([1.0, 2.0])]) == np.inf
    assert max_rel_diff([np.array([1.0, 2.0])], [np.array([np.nan, 2.0])]) == np.inf


def test_max_rel_diff_treats_equal_non_finite_values_as_equal():
    values = np.array([np.nan, np.inf, -np.inf, 3.0])
    assert max_rel_diff([values], [values.copy()]) == 0.0
    assert max_rel_diff([np.array([np.inf])], [np.array([-np.inf])]) == np.inf


def test_max_rel_diff_is_relative_with_a_floor():
    assert np.isclose(max_rel_diff([np.array([110.0])], [np.array([100.0])]), 0.1)
    assert np.isclose(max_rel_diff([np.array([1e-4])], [np.array([0.0])], floor=1e-3), 0.1)
