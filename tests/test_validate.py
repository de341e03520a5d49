"""Bad input gets a clear error: at construction for hyperparameters, at trace time for trees."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx

# (factory, kwargs, the argument the message must name)
BAD_HYPERPARAMETERS = [
    (atx.adam, dict(learning_rate=-0.1), "learning_rate"),
    (atx.adam, dict(learning_rate=float("nan")), "learning_rate"),
    (atx.adam, dict(learning_rate=None), "learning_rate"),
    (atx.adam, dict(learning_rate=0.1, b1=1.0), "b1"),
    (atx.adam, dict(learning_rate=0.1, b1=-0.1), "b1"),
    (atx.adamw, dict(learning_rate=0.1, b2=1.5), "b2"),
    (atx.adamw, dict(learning_rate=0.1, weight_decay=-1e-4), "weight_decay"),
    (atx.adam, dict(learning_rate=0.1, eps=-1e-8), "eps"),
    (atx.adam, dict(learning_rate=0.1, eps_root=-1.0), "eps_root"),
    (atx.nadam, dict(learning_rate=0.1, b2=1.0), "b2"),
    (atx.amsgrad, dict(learning_rate=0.1, b1=2.0), "b1"),
    (atx.radam, dict(learning_rate=0.1, b2=-0.5), "b2"),
    (atx.adamax, dict(learning_rate=0.1, eps=-1.0), "eps"),
    (atx.adamaxw, dict(learning_rate=-1.0), "learning_rate"),
    (
        atx.adagrad,
        dict(learning_rate=0.1, initial_accumulator_value=-0.1),
        "initial_accumulator_value",
    ),
    (atx.adagrad, dict(learning_rate=0.1, eps=-1e-7), "eps"),
    (atx.rmsprop, dict(learning_rate=0.1, decay=1.0), "decay"),
    (atx.rmsprop, dict(learning_rate=0.1, initial_scale=-1.0), "initial_scale"),
    (atx.rmsprop, dict(learning_rate=0.1, momentum=1.2), "momentum"),
    (atx.scale_by_bias_corrected_moments, dict(b1=1.0), "b1"),
    (atx.scale_by_ema_of_squares, dict(decay=-0.1), "decay"),
    (atx.scale_by_sum_of_squares, dict(eps=-1.0), "eps"),
    (atx.add_decoupled_weight_decay, dict(weight_decay=-0.1), "weight_decay"),
    (atx.add_decoupled_weight_decay, dict(learning_rate=-0.1), "learning_rate"),
    (
        atx.scale_by_bias_corrected_moments,
        dict(nesterov=True, momentum_decay=-1.0),
        "momentum_decay",
    ),
    (atx.scale_by_bias_corrected_moments, dict(momentum_decay=0.004), "momentum_decay"),
    (atx.scale_by_learning_rate, dict(learning_rate=-1.0), "learning_rate"),
]


@pytest.mark.parametrize(
    "factory,kwargs,argument",
    BAD_HYPERPARAMETERS,
    ids=[f"{f.__name__}-{a}={k.get(a)}" for f, k, a in BAD_HYPERPARAMETERS],
)
def test_invalid_hyperparameter_raises_naming_argument_and_value(factory, kwargs, argument):
    with pytest.raises(ValueError, match=argument) as error:
        factory(**kwargs)
    assert repr(kwargs[argument]) in str(error.value) or "None" in str(error.value)


def test_boundary_values_are_accepted():
    atx.adam(0.0, b1=0.0, b2=0.0, eps=0.0)
    atx.rmsprop(0.1, decay=0.0, momentum=0.0)
    atx.adagrad(0.1, initial_accumulator_value=0.0, eps=0.0)
    atx.adamw(optax.constant_schedule(-1.0))  # schedules are not evaluated at construction


def test_state_dtype_must_be_floating():
    with pytest.raises(TypeError, match="floating"):
        atx.scale_by_bias_corrected_moments(mu_dtype=jnp.int32)


def test_hyperparameter_must_be_scalar():
    with pytest.raises(ValueError, match="scalar"):
        atx.adam(jnp.ones(3))


def test_injected_hyperparameters_are_checked_at_init():
    tx = optax.inject_hyperparams(atx.adam)(learning_rate=0.1, b1=1.5)
    with pytest.raises(ValueError, match="b1"):
        tx.init({"w": jnp.zeros(2)})


@pytest.fixture
def adam_state():
    tx = atx.adam(0.1)
    return tx, tx.init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)})


def test_gradient_tree_with_extra_leaf_is_a_readable_error(adam_state):
    tx, state = adam_state
    grads = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3), "extra": jnp.zeros(1)}
    with pytest.raises(ValueError, match="gradient tree does not match the optimizer state"):
        jax.jit(tx.update)(grads, state)


def test_gradient_leaf_with_wrong_shape_names_the_leaf(adam_state):
    tx, state = adam_state
    grads = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"\['w'\] has shape \(3, 2\).*shape \(2, 3\)"):
        jax.jit(tx.update)(grads, state)


def test_weight_decay_needs_params():
    tx = atx.adamw(0.1)
    state = tx.init({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="needs the params"):
        tx.update({"w": jnp.zeros(2)}, state)


def test_weight_decay_params_must_match_updates():
    tx = atx.add_decoupled_weight_decay(0.1)
    with pytest.raises(ValueError, match="does not match"):
        tx.update({"w": jnp.zeros(2)}, tx.init(None), {"v": jnp.zeros(2)})


def test_concrete_numpy_scalars_are_checked():
    with pytest.raises(ValueError, match="b2"):
        atx.adam(0.1, b2=np.float32(1.0))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_non_floating_parameters_are_named(dtype):
    params = {"w": jnp.zeros(2), "step": jnp.zeros((), dtype)}
    with pytest.raises(TypeError, match=r"\['step'\] has dtype"):
        atx.adam(0.1).init(params)


# Values the arithmetic cannot use, accepted before: (factory, kwargs, the argument, text).
INF, NAN = float("inf"), float("nan")
BAD_AT_THE_EDGES = [
    (atx.adam, dict(learning_rate=0.1, b2=1 - 1e-9), "b2", "rounds to 1.0"),
    (atx.adam, dict(learning_rate=0.1, b1=np.float64(1 - 1e-10)), "b1", "rounds to 1.0"),
    (atx.rmsprop, dict(learning_rate=0.1, decay=1 - 1e-9), "decay", "rounds to 1.0"),
    (atx.adam, dict(learning_rate=INF), "learning_rate", "must be finite"),
    (atx.adamw, dict(learning_rate=0.1, weight_decay=INF), "weight_decay", "must be finite"),
    (atx.adam, dict(learning_rate=0.1, eps=INF), "eps", "must be finite"),
    (atx.rmsprop, dict(learning_rate=0.1, eps=INF), "eps", "must be finite"),
    (
        atx.adagrad,
        dict(learning_rate=0.1, initial_accumulator_value=INF),
        "initial_accumulator_value",
        "must be finite",
    ),
    (atx.radam, dict(learning_rate=0.1, threshold=NAN), "threshold", "finite number"),
    (atx.radam, dict(learning_rate=0.1, threshold=INF), "threshold", "never use"),
    (atx.radam, dict(learning_rate=0.1, threshold=-5.0), "threshold", "must be >= 4"),
    (atx.radam, dict(learning_rate=0.1, threshold=3.0, b2=0.9), "threshold", "2 < rho_t < 4"),
    (atx.adafactor, dict(clipping_threshold=0.0), "clipping_threshold", "must be > 0"),
    (atx.adafactor, dict(clipping_threshold=-1.0), "clipping_threshold", "must be > 0"),
    (atx.adafactor, dict(clipping_threshold=INF), "clipping_threshold", "must be finite"),
    (atx.rmsprop, dict(learning_rate=0.1, nesterov=True), "nesterov", "needs momentum"),
]


@pytest.mark.parametrize(
    "factory,kwargs,argument,text",
    BAD_AT_THE_EDGES,
    ids=[f"{f.__name__}-{a}={k.get(a)}" for f, k, a, _ in BAD_AT_THE_EDGES],
)
def test_values_the_arithmetic_cannot_use_are_refused(factory, kwargs, argument, text):
    with pytest.raises(ValueError, match=argument) as error:
        factory(**kwargs)
    assert text in str(error.value)


def test_values_at_the_edge_of_what_the_arithmetic_can_use_are_accepted():
    atx.adam(0.1, b2=float(np.nextafter(np.float32(1), np.float32(0))))  # the largest below 1
    atx.radam(0.1, b2=0.0, threshold=1.0)  # rho_t = rho_inf = 1: r_t = 1, real
    atx.radam(0.1, threshold=4.0)
    atx.adafactor(clipping_threshold=0.5)
    atx.rmsprop(0.1, momentum=0.9, nesterov=True)


def test_traced_out_of_range_hyperparameter_is_skipped_and_counted():
    """Inside jit a check cannot raise: an injected b1 = 1.5 becomes NaN, every update is NaN,
    and skip_nonfinite skips each step (parameters untouched) and counts it."""
    params = {"w": jnp.ones(2)}
    unguarded = optax.inject_hyperparams(atx.adam)(learning_rate=0.1, b1=1.5)
    updates, _ = jax.jit(unguarded.update)(params, jax.jit(unguarded.init)(params), params)
    assert np.all(np.isnan(updates["w"]))
    guarded = atx.skip_nonfinite(unguarded)
    state = jax.jit(guarded.init)(params)
    step = jax.jit(guarded.update)
    for _ in range(3):
        updates, state = step(params, state, params)
        np.testing.assert_array_equal(updates["w"], 0.0)
    assert int(state.skipped) == 3
