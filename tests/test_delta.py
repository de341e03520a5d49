"""Adadelta (adaptive_tx/delta.py): what its rule refuses, and its direction reading the statistics
before the step. Parity with optax, torch, keras and the float64 reference is table-driven
(tests/cases.py, tests/test_reference.py, tests/test_compat_*.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_tx as atx
from tests.reference import numpy_optimizers as ref


def test_eps_must_be_positive():
    """With eps = 0 the average of the steps stays 0 and no coordinate ever moves (optax: every
    update 0, or NaN where a gradient is 0): refused."""
    with pytest.raises(ValueError, match=r"eps must be > 0, got eps=0.0"):
        atx.adadelta(1.0, eps=0.0)
    assert atx.adadelta(1.0, eps=1e-30) is not None


@pytest.mark.parametrize("storage", [atx.Factored(2), atx.BlockMean(axes=(0,))], ids=repr)
def test_estimating_storages_are_refused(storage):
    with pytest.raises(ValueError, match="the average of the steps must see the step"):
        atx.scale_by_adadelta(nu_dtype=storage)


def test_complex_parameters_and_gradients_are_refused():
    tx = atx.adadelta(1.0)
    with pytest.raises(TypeError, match=r"scale_by_adadelta: parameter \['z'\] is complex"):
        tx.init({"z": jnp.ones(2, jnp.complex64)})
    params = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match=r"scale_by_adadelta: gradient \['w'\] is complex"):
        tx.update({"w": jnp.ones(2, jnp.complex64)}, tx.init(params), params)
    rows = {"w": atx.RowSparse([1], jnp.ones((1, 2), jnp.complex64), 2)}
    table = {"w": jnp.ones((2, 2))}
    with pytest.raises(TypeError, match=r"gradient \['w'\] is complex"):
        tx.update(rows, tx.init(table), table)


def test_int8_state_follows_the_reference():
    """8-bit averages (the storage the rule's statistics go through, decoded before the direction
    reads the previous E[dx^2]) stay within 8-bit precision of the float64 reference."""
    rng = np.random.default_rng(0)
    params = rng.normal(size=(2, 256)).astype(np.float32)
    grads = [rng.normal(size=params.shape).astype(np.float32) for _ in range(10)]
    tx = atx.adadelta(1.0, nu_dtype=atx.Int8Blockwise(min_size=0))
    state, p, update = tx.init(params), jnp.asarray(params), jax.jit(tx.update)
    for g in grads:
        u, state = update(jnp.asarray(g), state, p)
        p = p + u
    expected = ref.run_adadelta(params, grads, 1.0)[-1]
    moved = np.abs(expected - params).max()
    assert np.abs(np.asarray(p) - expected).max() <= 0.05 * moved
