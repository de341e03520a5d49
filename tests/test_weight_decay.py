"""add_decoupled_weight_decay against optax.add_decayed_weights: constants, schedules, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx

PARAMS = {"w": jnp.array([[1.0, -2.0]]), "b": jnp.array([3.0])}
GRADS = {"w": jnp.array([[0.1, 0.2]]), "b": jnp.array([0.3])}


@pytest.mark.parametrize(
    "weight_decay",
    [0.0, 0.1, optax.linear_schedule(0.1, 0.0, 3)],
    ids=["zero", "constant", "schedule"],
)
@pytest.mark.parametrize(
    "mask",
    [None, {"w": True, "b": False}, lambda p: {"w": False, "b": True}],
    ids=["nomask", "tree", "callable"],
)
def test_matches_optax(weight_decay, mask):
    ours = atx.add_decoupled_weight_decay(weight_decay, mask)
    theirs = optax.add_decayed_weights(weight_decay, mask)
    s1, s2 = ours.init(PARAMS), theirs.init(PARAMS)
    for _ in range(4):
        u1, s1 = jax.jit(ours.update)(GRADS, s1, PARAMS)
        u2, s2 = theirs.update(GRADS, s2, PARAMS)
        jax.tree.map(np.testing.assert_array_equal, u1, u2)


def test_bf16_updates_stay_bf16_under_a_schedule():
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
    tx = atx.add_decoupled_weight_decay(optax.constant_schedule(0.5))
    updates, _ = tx.update(params, tx.init(params), params)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    np.testing.assert_array_equal(updates["b"].astype(jnp.float32), [4.5])


@pytest.mark.parametrize(
    "learning_rate", [0.5, optax.linear_schedule(0.5, 0.1, 3)], ids=["constant", "schedule"]
)
def test_after_the_learning_rate_matches_optax_with_minus_lr_times_decay(learning_rate):
    """With `learning_rate` the transformation adds -lr * wd * p (keras' weight decay)."""
    lr = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
    wd = optax.linear_schedule(0.1, 0.05, 3)
    ours = atx.add_decoupled_weight_decay(wd, {"w": True, "b": False}, learning_rate=learning_rate)
    theirs = optax.add_decayed_weights(
        lambda count: -lr(count) * wd(count), {"w": True, "b": False}
    )
    s1, s2 = ours.init(PARAMS), theirs.init(PARAMS)
    for _ in range(4):
        u1, s1 = jax.jit(ours.update)(GRADS, s1, PARAMS)
        u2, s2 = theirs.update(GRADS, s2, PARAMS)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u1, u2)
