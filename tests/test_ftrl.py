"""FTRL-Proximal (adaptive_tx/ftrl_proximal.py) against the float64 reference from the paper,
and the properties the alias table gives the other methods (optax has no FTRL twin; keras parity
is in tests/test_compat_keras.py): the derived paths (row-sparse, effective learning rate, lean
storage), jit once, dtypes, inject_hyperparams, chain, guard, and the errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests.cases import gradient_stream, make_params, max_rel_diff, run, trajectories
from tests.reference import numpy_optimizers as ref
from tests.test_sparse import lazy_reference, sparse_stream

# (alias kwargs, reference kwargs): the defaults, then every regularizer at once.
SETTINGS = [
    (dict(learning_rate=0.1), dict(lr=0.1)),
    (
        dict(learning_rate=0.1, learning_rate_power=-0.3, initial_accumulator_value=0.0)
        | dict(l1_regularization_strength=0.5, l2_regularization_strength=0.1)
        | dict(l2_shrinkage_regularization_strength=0.05, beta=0.5),
        dict(lr=0.1, learning_rate_power=-0.3, initial_accumulator_value=0.0)
        | dict(l1=0.5, l2=0.1, l2_shrinkage=0.05, beta=0.5),
    ),
    (
        dict(learning_rate=0.05, learning_rate_power=0.0, l1_regularization_strength=2.0),
        dict(lr=0.05, learning_rate_power=0.0, l1=2.0),
    ),
]


def _reference(params, grads, **hyper):
    per_leaf = {k: ref.run_ftrl(p, [g[k] for g in grads], **hyper) for k, p in params.items()}
    return [{k: v[t] for k, v in per_leaf.items()} for t in range(len(grads))]


def test_matches_float64_reference_and_keeps_its_exact_zeros():
    """100 steps on the table's stream, every iterate: within 1e-5 of the paper's formulas in
    float64 relative to the parameters' scale (floor 1: the weight is a closed form of z, a
    float32 sum of gradients up to 100, and near 0 it is the difference of z and the L1 bound,
    which share their leading digits), and exactly zero wherever the reference is (L1 keeps
    weights at 0.0, not ~1e-9)."""
    params, grads = make_params(), gradient_stream(100)
    runs = trajectories([atx.ftrl(**ours) for ours, _ in SETTINGS], params, grads)
    for (_, hyper), ours in zip(SETTINGS, runs):
        expected = _reference(params, grads, **hyper)
        iterates = [jax.tree.map(lambda x, t=t: np.asarray(x[t]), ours) for t in range(100)]
        assert max_rel_diff(iterates, expected, floor=1.0) <= 1e-5
        zeros = [(np.asarray(a[k]) == 0, e[k] == 0) for a, e in zip(iterates, expected) for k in a]
        assert all(np.array_equal(a, e) for a, e in zeros)
        if hyper.get("l1", 0) > 0:
            assert sum(int(e.sum()) for _, e in zeros) > 100  # the setting does zero weights


def test_row_sparse_is_the_dense_step_on_the_touched_rows():
    """Row-sparse "emb" (lazy): the dense FTRL step, the untouched rows held back; the table
    moves and rows are exactly zero where the dense step makes them zero."""
    ours_kwargs = SETTINGS[1][0]
    row_sparse, dense, touched = sparse_stream(30)
    params = make_params()
    ours, _, traces = run(atx.ftrl(**ours_kwargs), params, row_sparse)
    expected = lazy_reference(atx.ftrl(**ours_kwargs), params, dense, touched)
    assert traces == 1
    assert max_rel_diff(ours, expected) <= 1e-5
    assert max_rel_diff(ours[-1]["emb"], params["emb"]) > 1e-2
    np.testing.assert_array_equal(ours[-1]["emb"] == 0, expected[-1]["emb"] == 0)


def test_update_is_minus_rate_times_soft_thresholded_z_minus_the_parameter():
    """u_T = -rate * (z_T - clip(z_T, ±l1)) - θ_{T-1}, the rate read from the state, z_T from
    the float64 reference (the diagnostics docstring's closed form for FTRL)."""
    ours_kwargs, hyper = SETTINGS[1]
    params, grads = make_params(), gradient_stream(40)
    tx = atx.ftrl(**ours_kwargs)

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, u, atx.effective_learning_rate(s)

    state, before = tx.init(params), params
    for g in grads:
        before, (params, state, updates, rates) = params, step(params, state, g)
    for leaf in params:
        _, (n, z) = ref.run_ftrl(make_params()[leaf], [g[leaf] for g in grads], **hyper,
                                 with_state=True)
        denominator = (hyper["beta"] + n**0.3) / hyper["lr"] + 2 * hyper["l2"]
        np.testing.assert_allclose(rates[leaf], 1 / denominator, rtol=1e-5)
        d = z - np.clip(z, -hyper["l1"], hyper["l1"])
        expected = -np.asarray(rates[leaf], np.float64) * d - np.asarray(before[leaf], np.float64)
        np.testing.assert_allclose(updates[leaf], expected, rtol=1e-5, atol=1e-6)


def test_jit_once_bfloat16_inject_chain_and_guard():
    params, grads = make_params(), gradient_stream(10)
    kwargs = SETTINGS[1][0]
    plain, state, traces = run(atx.ftrl(**kwargs), params, grads)
    assert traces == 1
    injected, inj_state, _ = run(optax.inject_hyperparams(atx.ftrl)(**kwargs), params, grads)
    assert max_rel_diff(injected, plain) <= 1e-5
    assert inj_state.hyperparams["l1_regularization_strength"] == np.float32(0.5)
    guarded, _, _ = run(atx.skip_nonfinite(atx.ftrl(**kwargs)), params, grads)
    clipped, _, _ = run(optax.chain(optax.clip(1e6), atx.ftrl(**kwargs)), params, grads)
    assert max_rel_diff(guarded, plain) == 0 and max_rel_diff(clipped, plain) == 0
    bf16 = jax.tree.map(lambda p: jnp.asarray(p, jnp.bfloat16), params)
    tx = atx.ftrl(**kwargs)
    g = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), grads[0])
    updates, new_state = jax.jit(tx.update)(g, tx.init(bf16), bf16)
    chex.assert_trees_all_equal_dtypes(updates, g)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, tx.init(bf16))
    lean, _, _ = run(atx.ftrl(**kwargs, nu_dtype=jnp.float32), bf16, grads)
    assert max_rel_diff(lean[-1], plain[-1], floor=1.0) <= 2e-2  # bfloat16 parameters


def test_errors_name_the_argument_and_the_fix():
    with pytest.raises(TypeError, match="learning_rate must be a number, got a schedule"):
        atx.ftrl(optax.constant_schedule(0.1))
    with pytest.raises(ValueError, match="learning_rate_power must be <= 0"):
        atx.ftrl(0.1, learning_rate_power=0.5)
    tx = atx.ftrl(0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"ScaleByFtrl reads the params: call update\("):
        tx.update(params, tx.init(params))
