"""Cautious masking (adaptive_tx/masking.py): the paper's C-AdamW against its float64 reference,
the mask over every alias of the table against the formula applied to the alias's own update,
and the refusals (row-sparse leaves, a learning rate inside a descent=False wrapper)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests.cases import DEFAULTS, case_id, gradient_stream, make_params
from tests.reference import numpy_optimizers as ref
from tests.test_reference import LR, TOL, _assert_close, _run_jax, problem  # noqa: F401


def _c_adamw(weight_decay):
    """The paper's C-AdamW: the mask on Adam's scaling, the weight decay unmasked."""
    return optax.chain(
        atx.cautious(atx.scale_by_bias_corrected_moments(), descent=False),
        atx.add_decoupled_weight_decay(weight_decay),
        atx.scale_by_learning_rate(LR),
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_c_adamw_matches_float64_reference(weight_decay, problem):
    expected = np.stack(ref.run_cautious_adamw(*problem, LR, weight_decay=weight_decay))
    _assert_close(_run_jax(_c_adamw(weight_decay), problem), expected, TOL)
    # the mask changes the trajectory (else the comparison could not tell it from Adam)
    adamw = np.stack(ref.run_adam(*problem, LR, weight_decay=weight_decay))
    assert np.abs(expected - adamw).max() > 100 * TOL


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_wrapping_any_alias_masks_its_own_update(row):
    """cautious(alias) gives, at every step, the alias's update from the same state masked by the
    float64 formula, and keeps the alias's state; the mask drops something on this stream where
    there is a momentum."""
    name, kwargs = row
    inner = getattr(atx, name)(**kwargs)
    tx = atx.cautious(inner)
    params, grads = make_params(), gradient_stream(8)

    @jax.jit
    def step(p, s, g):
        plain, plain_state = inner.update(g, s, p)
        masked, state = tx.update(g, s, p)
        return optax.apply_updates(p, masked), state, plain, masked, plain_state

    state, dropped = tx.init(params), 0
    for g in grads:
        params, state, plain, masked, plain_state = step(params, state, g)
        jax.tree.map(np.testing.assert_array_equal, state, plain_state)
        for leaf in plain:
            u, gl = np.asarray(plain[leaf], np.float64), np.asarray(g[leaf], np.float64)
            expected = ref.cautious_mask(-u, gl)  # the reference's mask is for u along g
            np.testing.assert_allclose(masked[leaf], -expected, rtol=1e-6, atol=1e-12)
            dropped += int(np.sum((u * gl >= 0) & (u != 0)))
    if name not in ("adagrad", "rmsprop", "adadelta", "rprop"):  # (no momentum: always agrees)
        assert dropped > 0


def test_mask_keeps_dtype_and_floor_bounds_the_factor():
    u = jnp.array([-1.0, 1.0, 1.0, 1.0], jnp.bfloat16)
    masked = atx.cautious_mask(u, jnp.ones(4, jnp.bfloat16))  # one of four agrees: x4
    assert masked.dtype == jnp.bfloat16
    np.testing.assert_array_equal(masked.astype(jnp.float32), [-4.0, 0.0, 0.0, 0.0])
    u = jnp.concatenate([-jnp.ones(1), jnp.ones(9999)])
    np.testing.assert_allclose(atx.cautious_mask(u, jnp.ones(10_000))[0], -1000.0, rtol=1e-6)


def test_row_sparse_gradients_are_refused():
    params = {"emb": jnp.zeros((10, 3))}
    g = {"emb": atx.RowSparse(jnp.array([1, 4]), jnp.ones((2, 3)), 10)}
    tx = atx.cautious(atx.adam(0.1))
    with pytest.raises(ValueError, match=r"cautious: gradient leaf \['emb'\] is row-sparse"):
        tx.update(g, tx.init(params), params)


def test_descent_false_around_a_learning_rate_is_refused():
    with pytest.raises(ValueError, match=r"cautious\(descent=False\): the wrapped"):
        atx.cautious(atx.adamw(0.1), descent=False).init(jnp.zeros(2))


@pytest.mark.parametrize("floor", [0.0, 1.5, float("nan")])
def test_invalid_floor_raises(floor):
    with pytest.raises(ValueError, match="floor must be"):
        atx.cautious(atx.adam(0.1), floor=floor)


def test_jit_once_inject_and_guard():
    """One trace over many steps, inside inject_hyperparams and skip_nonfinite (a NaN step
    changes nothing)."""
    tx = atx.skip_nonfinite(atx.cautious(optax.inject_hyperparams(atx.adamw)(learning_rate=0.1)))
    traces = []

    @jax.jit
    def step(p, s, g):
        traces.append(1)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    params, grads = make_params(), gradient_stream(5)
    state = tx.init(params)
    for g in grads:
        params, state = step(params, state, g)
    bad = jax.tree.map(lambda x: x * np.nan, grads[0])
    after, bad_state = step(params, state, bad)
    assert len(traces) == 1
    jax.tree.map(np.testing.assert_array_equal, after, params)
    assert int(bad_state.skipped) == 1
