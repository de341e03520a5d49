"""scale_by_learning_rate: optax's arithmetic, plus the rate kept in the state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx

SCHEDULE = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)


@pytest.mark.parametrize("learning_rate", [0.1, SCHEDULE], ids=["constant", "schedule"])
@pytest.mark.parametrize("flip_sign", [True, False])
def test_matches_optax_and_keeps_the_rate(learning_rate, flip_sign):
    ours = atx.scale_by_learning_rate(learning_rate, flip_sign=flip_sign)
    theirs = optax.scale_by_learning_rate(learning_rate, flip_sign=flip_sign)
    g = {"w": jnp.array([1.0, -2.0]), "h": jnp.array([0.5], jnp.bfloat16)}
    s1, s2 = ours.init(g), theirs.init(g)
    for step in range(4):
        u1, s1 = jax.jit(ours.update)(g, s1)
        u2, s2 = theirs.update(g, s2)
        jax.tree.map(np.testing.assert_array_equal, u1, u2)
        assert u1["h"].dtype == jnp.bfloat16
        expected = learning_rate(step) if callable(learning_rate) else learning_rate
        assert s1.rate == np.float32(expected)
        if callable(learning_rate):
            assert int(s1.schedule_count) == step + 1
        else:  # a constant keeps no count, as optax's (whose state is empty)
            assert "count" not in s1._fields
