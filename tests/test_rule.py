"""The rule engine: state layout and dtypes, saturation, elementwise rules, edge-case trees."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from adaptive_tx.moments import BiasCorrectedMomentsHyperparams, bias_corrected_moments_rule
from adaptive_tx.rule import apply_rule
from tests.cases import max_rel_diff

INT32_MAX = np.iinfo(np.int32).max

PRIMITIVES = [
    atx.scale_by_sum_of_squares(),
    atx.scale_by_ema_of_squares(),
    atx.scale_by_ema_of_squares(centered=True, bias_correction=True),
    atx.scale_by_bias_corrected_moments(),
    atx.scale_by_bias_corrected_moments(nesterov=True, amsgrad=True),
    atx.scale_by_inf_norm_moments(),
    atx.scale_by_rectified_moments(),
    # the options that carry torch's and keras' conventions
    atx.scale_by_bias_corrected_moments(nesterov=True, momentum_decay=0.004, eps_hat=True),
    atx.scale_by_bias_corrected_moments(amsgrad=True, amsgrad_raw_max=True, eps_hat=True),
    atx.scale_by_inf_norm_moments(eps_in_max=False),
    atx.scale_by_rectified_moments(eps_hat=True, strict_threshold=True),
]


def test_optional_statistics_are_none_when_unused():
    params = {"w": jnp.zeros(3)}
    assert atx.scale_by_ema_of_squares().init(params).mu is None
    assert atx.scale_by_bias_corrected_moments().init(params).nu_max is None
    state = atx.scale_by_bias_corrected_moments(amsgrad=True).init(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(state.nu_max, params)


def test_state_dtypes_are_stored_as_asked_and_computed_in_float32():
    params = {"w": jnp.ones(4)}
    g = {"w": jnp.array([1e-3, 1.0, 3.0, -2.0])}
    lean = atx.scale_by_bias_corrected_moments(mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    full = atx.scale_by_bias_corrected_moments()
    state = lean.init(params)
    assert state.mu["w"].dtype == jnp.bfloat16 and state.nu["w"].dtype == jnp.bfloat16
    updates, state = jax.jit(lean.update)(g, state)
    expected, expected_state = full.update(g, full.init(params))
    assert updates["w"].dtype == jnp.float32
    # the first step never reads the (zero) stored moments, so it is exactly the float32 step
    np.testing.assert_array_equal(updates["w"], expected["w"])
    np.testing.assert_array_equal(state.nu["w"], expected_state.nu["w"].astype(jnp.bfloat16))


@pytest.mark.parametrize("tx", PRIMITIVES, ids=lambda tx: type(tx.init({})).__name__)
def test_count_saturates_and_updates_stay_finite_at_huge_steps(tx):
    params = {"w": jnp.ones(3)}
    state = tx.init(params)._replace(count=jnp.asarray(INT32_MAX - 1, jnp.int32))
    for _ in range(3):
        updates, state = jax.jit(tx.update)({"w": jnp.array([1.0, -2.0, 0.5])}, state)
        assert bool(jnp.all(jnp.isfinite(updates["w"])))
    assert state.count.dtype == jnp.int32 and int(state.count) == INT32_MAX


@pytest.mark.parametrize("tx", PRIMITIVES, ids=lambda tx: type(tx.init({})).__name__)
def test_empty_and_zero_size_trees(tx):
    for params in ({}, {"w": jnp.zeros((0, 3))}):
        updates, state = jax.jit(tx.update)(params, tx.init(params))
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)


def test_rule_is_elementwise_rows_equal_dense_rows():
    """The property row-sparse execution relies on: updating some rows alone gives the same rows."""
    hyperparams = BiasCorrectedMomentsHyperparams(0.9, 0.999, 1e-8, 0.0)
    rule = bias_corrected_moments_rule(hyperparams, nesterov=True, amsgrad=True)
    rng = np.random.default_rng(0)
    g = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
    stats = tuple(jnp.asarray(np.abs(rng.normal(size=(8, 5))), jnp.float32) for _ in range(3))
    t = jnp.int32(7)
    dense_update, dense_stats = apply_rule(rule, g, stats, t)
    rows = jnp.array([1, 4, 6])
    row_update, row_stats = apply_rule(rule, g[rows], tuple(s[rows] for s in stats), t)
    np.testing.assert_array_equal(row_update, dense_update[rows])
    for r, d in zip(row_stats, dense_stats):
        np.testing.assert_array_equal(r, d[rows])


def test_complex_parameters_match_optax():
    rng = np.random.default_rng(0)
    params = jnp.asarray(rng.normal(size=4) + 1j * rng.normal(size=4), jnp.complex64)
    ours, theirs = atx.adam(0.05), optax.adam(0.05)
    s1, s2, p1, p2 = ours.init(params), theirs.init(params), params, params
    for _ in range(20):
        g = jnp.asarray(rng.normal(size=4) + 1j * rng.normal(size=4), jnp.complex64)
        u1, s1 = ours.update(g, s1)
        u2, s2 = theirs.update(g, s2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    assert p1.dtype == jnp.complex64
    assert max_rel_diff(jnp.abs(p1 - p2), jnp.zeros(4), floor=1.0) <= 1e-5


def test_custom_rule_builds_a_transformation():
    from typing import NamedTuple

    class SignState(NamedTuple):
        count: jax.Array

    sign = atx.Rule(
        initial=(),
        accumulate=lambda g, s, t: s,
        direction=lambda g, s, t: jnp.sign(g),
        scale=lambda s, t: 1.0,
    )
    tx = optax.chain(atx.dense_transformation(sign, SignState), atx.scale_by_learning_rate(0.5))
    updates, state = tx.update({"w": jnp.array([3.0, -0.1, 0.0])}, tx.init({"w": jnp.zeros(3)}))
    np.testing.assert_array_equal(updates["w"], [-0.5, 0.5, 0.0])
    assert int(state[0].count) == 1


def test_rule_that_reads_and_gives_the_parameter():
    """reads_params / gives_params: a rule whose new parameter is a closed form of its state and
    the parameter (here: halve the parameter, then zero it where |g| accumulated <= 1). Dense and
    row-sparse leaves give the same numbers on the touched rows (the parameter rows are gathered),
    untouched rows keep theirs, a zero of the closed form is exactly 0 after apply_updates, and
    the flags are checked."""
    from typing import NamedTuple

    class ShrinkState(NamedTuple):
        count: jax.Array
        total: optax.Updates

    shrink = atx.Rule(
        initial=(0.0,),
        accumulate=lambda g, s, t, p: (s[0] + jnp.abs(g),),
        direction=lambda g, s, t, p: jnp.where(s[0] > 1, -0.5 * p, 0.0),
        scale=lambda s, t: 1.0,
        reads_params=True,
        gives_params=True,
    )
    tx = atx.dense_transformation(shrink, ShrinkState)
    table = jnp.array([[0.5, 3.0], [0.75, -1.0], [5.0, 5.0]])  # halves exact in float32
    g = jnp.array([[2.0, 0.5], [0.0, 0.0], [0.25, 4.0]])
    updates, _ = tx.update({"t": g}, tx.init({"t": table}), {"t": table})
    new = optax.apply_updates({"t": table}, updates)["t"]
    np.testing.assert_array_equal(new, [[0.25, 0.0], [0.0, 0.0], [0.0, 2.5]])  # exact zeros
    rows = atx.RowSparse(jnp.array([2, 0]), g[jnp.array([2, 0])], 3)
    row_updates, _ = tx.update({"t": rows}, tx.init({"t": table}), {"t": table})
    np.testing.assert_array_equal(
        atx.sparse.apply_updates({"t": table}, row_updates)["t"], new.at[1].set(table[1])
    )
    with pytest.raises(ValueError, match="Shrink reads the params"):
        tx.update({"t": g}, tx.init({"t": table}))
    with pytest.raises(ValueError, match="gives_params=True must also set reads_params=True"):
        atx.dense_transformation(shrink._replace(reads_params=False), ShrinkState)
    with pytest.raises(ValueError, match="this rule reads the parameters: pass param="):
        apply_rule(shrink, g, (jnp.zeros_like(g),), jnp.int32(1))
