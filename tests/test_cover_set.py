"""SM3's cover-set storage (adaptive_tx.cover_set): the bound it keeps, its errors, and the row
path of the leaves it keeps whole. Parity with optax.sm3 and the float64 reference are the table's
(tests/cases.py, tests/test_reference.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests.cases import max_rel_diff, run


def test_decoded_statistic_bounds_it_from_above_and_is_exact_on_vectors():
    """min over the per-axis maxima >= v (SM3's guarantee), equal where v is a max in every
    slice through it; a vector is kept whole (exact)."""
    v = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    kept = atx.CoverSet()
    stored = kept.encode(jnp.asarray(v), kept.init(jnp.zeros(v.shape), 0.0), None)
    decoded = np.asarray(stored.widen())
    assert decoded.shape == v.shape and np.all(decoded >= v)
    assert decoded[np.unravel_index(v.argmax(), v.shape)] == v.max()
    assert [m.shape for m in stored.vectors()] == [(3,), (4,), (5,)]
    vector = jnp.asarray(v[0, 0])
    whole = kept.encode(vector, kept.init(jnp.zeros(5), 0.0), None)
    np.testing.assert_array_equal(whole.widen(), vector)


def test_errors_name_the_argument_and_the_fix():
    with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\], got b2=1.5"):
        atx.scale_by_sm3(b2=1.5)
    with pytest.raises(ValueError, match="at most 4 axes.*shape \\(1, 1, 1, 1, 2\\)"):
        atx.sm3(0.1).init({"k": jnp.zeros((1, 1, 1, 1, 2))})


def test_row_sparse_vector_is_the_dense_step_on_its_touched_rows():
    """A vector keeps its accumulator whole, so its touched rows update alone: equal to optax's
    dense step where the untouched rows' gradients are 0 and their momentum has not moved (one
    step from a fresh state)."""
    params = {"v": jnp.linspace(-1.0, 1.0, 10)}
    rows = atx.RowSparse(jnp.array([2, 7]), jnp.array([0.5, -2.0]), 10)
    dense = {"v": jnp.zeros(10).at[jnp.array([2, 7])].set(jnp.array([0.5, -2.0]))}
    ours, _, _ = run(atx.sm3(0.1), params, [{"v": rows}])
    theirs, _, _ = run(optax.sm3(0.1), params, [dense])
    assert max_rel_diff(ours, theirs) <= 1e-6
