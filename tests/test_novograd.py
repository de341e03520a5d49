"""NovoGrad (adaptive_tx.layerwise.scale_by_novograd): what is particular to a per-leaf second
moment. Parity with optax.novograd and the float64 reference are the table's (tests/cases.py,
tests/test_reference.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_tx as atx


def test_each_leaf_step_is_invariant_to_its_gradient_scale():
    """One number per leaf: scaling a leaf's gradients by 1000 leaves its steps unchanged
    (eps = 0), whatever the other leaves do; the first step is -lr g / |g|, one factor for the
    whole leaf (the within-leaf proportions of g are kept)."""
    rng = np.random.default_rng(0)
    grads = [{"a": rng.normal(size=4), "b": rng.normal(size=3)} for _ in range(5)]
    params = {"a": jnp.zeros(4), "b": jnp.zeros(3)}
    tx = atx.novograd(0.1, eps=0.0)

    def last_update(stream):
        state = tx.init(params)
        for g in stream:
            updates, state = tx.update(g, state, params)
        return updates

    plain = last_update(grads)
    scaled = last_update([{"a": 1000 * g["a"], "b": g["b"]} for g in grads])
    np.testing.assert_allclose(scaled["a"], plain["a"], rtol=1e-5)
    np.testing.assert_allclose(scaled["b"], plain["b"], rtol=1e-6)
    first = atx.novograd(0.1, eps=0.0).update(grads[0], tx.init(params), params)[0]
    ratio = np.asarray(first["a"]) / grads[0]["a"]  # -lr g / |g|: one factor for the leaf
    np.testing.assert_allclose(ratio, -0.1 / np.linalg.norm(grads[0]["a"]), rtol=1e-6)


def test_errors_name_the_argument_and_the_fix():
    params = {"w": jnp.ones(2)}
    tx = atx.novograd(0.1)
    with pytest.raises(ValueError, match=r"reads the params: call update\(updates, state"):
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        atx.novograd(0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\)"):
        atx.scale_by_novograd(b2=1.0)
