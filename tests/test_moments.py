"""The Adam family's low-precision state: float32 arithmetic, rounding only when stored."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests.cases import gradient_stream, make_params, max_rel_diff


def _upcast(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


@pytest.mark.parametrize("mu_dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_first_moment_is_float32_arithmetic_rounded_on_store(mu_dtype):
    """Each step equals optax's float32 Adam started from the upcast stored state, and the stored
    moment is that float32 moment rounded (within one unit of the stored precision).

    optax with the same `mu_dtype` differs: it multiplies the stored moment by b1 in bf16, which
    rounds before the sum; this library computes in float32 and rounds once, when storing.
    """
    ours = atx.scale_by_bias_corrected_moments(mu_dtype=mu_dtype)
    reference = optax.scale_by_adam()
    state = ours.init(make_params())
    step = jax.jit(ours.update)
    for g in gradient_stream(60):
        expected, expected_state = reference.update(
            g, optax.ScaleByAdamState(state.count, _upcast(state.mu), state.nu)
        )
        actual, state = step(g, state)
        assert max_rel_diff(actual, expected) <= 1e-5
        for a, e in zip(jax.tree.leaves(state.mu), jax.tree.leaves(expected_state.mu)):
            assert a.dtype == mu_dtype
            one_unit = np.abs(np.spacing(np.asarray(e.astype(mu_dtype))))
            assert np.all(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64)) <= one_unit)
    assert int(state.count) == 60
