"""Lion (adaptive_tx/sign.py): the direction reads the momentum before the step, and the rule's
lazy row path. Parity with optax, keras and the float64 reference is table-driven
(tests/cases.py, tests/test_reference.py, tests/test_compat_keras.py)."""

import jax
import jax.numpy as jnp
import numpy as np

import pytest

import adaptive_tx as atx
from adaptive_tx.rule import apply_rule
from adaptive_tx.sign import LionHyperparams, lion_rule


def test_direction_reads_the_momentum_before_the_step():
    """b1 = 0.9, b2 = 0.0: the new momentum is g itself, so a direction read from the new
    statistics would be sign(g); Lion's is sign(0.9 m_{t-1} + 0.1 g)."""
    rule = lion_rule(LionHyperparams(0.9, 0.0))
    update, (mu,) = apply_rule(rule, jnp.array([1.0, -1.0]), (jnp.array([-2.0, 0.05]),), 1)
    np.testing.assert_array_equal(update, [-1.0, -1.0])  # sign(-1.8 + 0.1), sign(0.045 - 0.1)
    np.testing.assert_array_equal(mu, [1.0, -1.0])


def test_untouched_rows_keep_their_momentum_and_parameters():
    """Row-sparse gradients: only the rows present move, by lr * sign; the others keep both."""
    table = jnp.ones((4, 2))
    tx = atx.lion(0.1, weight_decay=0.0)
    state = tx.init(table)
    rows = atx.RowSparse([2], jnp.array([[3.0, -1.0]]), 4)
    updates, state = jax.jit(tx.update)(rows, state, table)
    dense = atx.sparse.apply_updates(table, updates)
    np.testing.assert_allclose(dense[2], [0.9, 1.1])
    np.testing.assert_array_equal(np.delete(np.asarray(dense), 2, axis=0), 1.0)
    mu = np.asarray(state[0].mu)
    np.testing.assert_allclose(mu[2], [0.03, -0.01], rtol=1e-6)
    assert np.all(np.delete(mu, 2, axis=0) == 0)


def test_rprop_arguments_are_checked():
    with pytest.raises(ValueError, match="min_step_size must be <= max_step_size"):
        atx.rprop(0.1, min_step_size=1.0, max_step_size=0.5)
    with pytest.raises(ValueError, match="eta_minus must be > 0"):
        atx.rprop(0.1, eta_minus=0.0)
    with pytest.raises(ValueError, match="Rprop: etas must be a pair of numbers"):
        atx.compat.torch.Rprop(etas=0.5)
    with pytest.raises(ValueError, match="Rprop: step_sizes must be a pair of numbers"):
        atx.compat.torch.Rprop(step_sizes=(1e-6, 1.0, 2.0))


def test_rprop_update_is_the_current_step():
    """The paper's and torch's step: the first update already moves (optax 0.2.8 returns the
    previous step, so its first update is 0), and a flip skips that coordinate's step."""
    tx = atx.rprop(0.1)
    params = jnp.zeros(2)
    state = tx.init(params)
    steps = []
    for g in ([1.0, 1.0], [1.0, -1.0], [1.0, -1.0]):
        u, state = tx.update(jnp.array(g), state, params)
        steps.append(np.asarray(u))
    np.testing.assert_allclose(steps, [[-0.1, -0.1], [-0.12, 0.0], [-0.144, 0.05]], rtol=1e-6)
