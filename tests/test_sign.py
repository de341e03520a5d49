"""Lion (adaptive_tx/sign.py): the direction reads the momentum before the step, and the rule's
lazy row path. Parity with optax, keras and the float64 reference is table-driven
(tests/cases.py, tests/test_reference.py, tests/test_compat_keras.py)."""

import jax
import jax.numpy as jnp
import numpy as np

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
