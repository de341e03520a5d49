"""skip_nonfinite: bad steps change nothing but the counters; overflow and saturation are safe.

Written against the public API (aliases, init/update, the guard's own state): the inner states are
compared as whole trees, never field by field.
"""

from __future__ import annotations

import pathlib
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests.cases import (
    DEFAULTS,
    case_id,
    gradient_stream,
    make_params,
    max_rel_diff,
    row_stepper,
    run,
    twin,
)

INT32_MAX = np.iinfo(np.int32).max


def _alias(row):
    name, kwargs = row
    return getattr(atx, name)(**kwargs)


def _poison(grads, leaf, value, where=(0, 0)):
    """A copy of one gradient with a single entry of one leaf replaced by `value`."""
    bad = {k: np.array(v) for k, v in grads.items()}
    bad[leaf][where] = value
    return bad


def _with_bad_steps(clean):
    """`clean` with bad gradients inserted: a NaN, then an Inf right after, later a NaN in
    a leaf without weight decay and a step where everything is NaN."""
    bad = list(clean)
    bad.insert(3, _poison(clean[3], "w", np.nan, (1, 2)))
    bad.insert(4, _poison(clean[3], "emb", np.inf))
    bad.insert(9, _poison(clean[7], "b", -np.inf, (0,)))
    bad.insert(12, jax.tree.map(lambda g: np.full_like(g, np.nan), clean[0]))
    return bad, [3, 4, 9, 12]


def _assert_bitwise_equal(a, b):
    chex.assert_trees_all_equal_structs(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _finite(tree) -> bool:
    return bool(atx.guards.all_finite(tree))


def _stayed_finite(initial_state, state) -> bool:
    """No state coordinate became NaN/Inf (hyperparameters may hold inf on purpose)."""
    return bool(atx.guards.stays_finite(initial_state, state))


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_bad_steps_leave_params_and_inner_state_untouched(row):
    params, clean = make_params(), gradient_stream(20)
    bad, bad_steps = _with_bad_steps(clean)
    guarded = row_stepper(row, atx.skip_nonfinite)  # one compilation for both streams
    iterates, state, _ = run(guarded, params, bad)
    clean_iterates, clean_state, traces = run(guarded, params, clean)
    assert traces == 1
    for k in bad_steps:  # zero updates: the parameters do not move on a bad step
        _assert_bitwise_equal(iterates[k], iterates[k - 1])
    # The inner state skipped the bad steps (count, moments, schedule position): the run equals,
    # bitwise, the run without the bad batches, and only the guard's counters differ.
    _assert_bitwise_equal(iterates[-1], clean_iterates[-1])
    _assert_bitwise_equal(state.inner_state, clean_state.inner_state)
    assert (int(state.skipped), int(state.consecutive_skipped), bool(state.halted)) == (4, 0, False)
    assert int(clean_state.skipped) == 0
    # And the guard does not change a clean run: the unguarded alias. Not bitwise: the guarded
    # program reads the new state for its check, so XLA fuses (and rounds) the inner step
    # differently; 20 steps of 1-ulp differences stay below 1e-5 (measured: 6e-6, RMSProp).
    # NovoGrad: 1.5e-5 (its per-leaf norm is a reduction, summed in another order when fused,
    # and its momentum adds steps without the (1 - b1) factor: ten times the step's rounding).
    plain_iterates, _, _ = run(row_stepper(row), params, clean)
    tolerance = 3e-5 if row[0] == "novograd" else 1e-5
    assert max_rel_diff(clean_iterates[-1], plain_iterates[-1]) <= tolerance


def test_one_branch_and_few_reductions_however_many_leaves():
    """Compile time follows the program's size: the guard is one lax.cond on the global flag (no
    select per leaf, which XLA fused with the flag's reductions over every leaf: compile time grew
    quadratically, 174 s at 100 leaves), and its flag reduces four arrays at a time. The times
    against optax.apply_if_finite are in benchmarks/guard_compile.py."""
    leaves = 60
    params = {f"p{i}": jnp.zeros((4, 3)) for i in range(leaves)}
    tx = atx.skip_nonfinite(atx.adam(0.1))
    jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params), params).jaxpr
    names = [eqn.primitive.name for eqn in jaxpr.eqns]
    assert names.count("cond") == 1
    per_leaf = [e for e in jaxpr.eqns if e.primitive.name == "select_n" and e.outvars[0].aval.ndim]
    assert not per_leaf
    # gradients, updates, mu and nu: 4 arrays per leaf, one reduction per 4 (+ the scalars).
    assert names.count("reduce_and") <= leaves + 4


def test_counters_count_the_streak_and_reset_on_a_good_step():
    tx = atx.skip_nonfinite(atx.adam(0.1))
    params = {"w": jnp.zeros(3)}
    step = jax.jit(tx.update)
    state = tx.init(params)
    good, nan = {"w": jnp.ones(3)}, {"w": jnp.array([1.0, jnp.nan, 1.0])}
    seen = []
    for g in [nan, nan, good, nan, good, good, nan, nan, nan]:
        updates, state = step(g, state)
        seen.append((int(state.skipped), int(state.consecutive_skipped)))
        assert bool(jnp.all(updates["w"] == 0)) == (g is nan)
    assert seen == [(1, 1), (2, 2), (2, 0), (3, 1), (3, 0), (3, 0), (4, 1), (5, 2), (6, 3)]
    assert not bool(state.halted)  # no limit: the flag never rises


def _trajectory(tx, params, grads):
    """The parameters and the state after every step, with one jitted update."""
    update, state, trajectory = jax.jit(tx.update), tx.init(params), []
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append((params, state))
    return trajectory


@pytest.mark.parametrize("limit", [1, 3])
def test_inside_jit_the_limit_sets_a_sticky_flag_and_params_stay_finite(limit):
    tx = atx.skip_nonfinite(atx.adam(0.1), max_consecutive_errors=limit)
    params, (good, *_) = make_params(), gradient_stream(1)
    nan = jax.tree.map(lambda g: np.full_like(g, np.nan), good)
    # limit - 1 bad steps, a good one (resets the streak), limit + 1 bad ones, then good ones.
    stream = [nan] * (limit - 1) + [good] + [nan] * (limit + 1) + [good] * 2
    trajectory = _trajectory(tx, params, stream)
    halted = [bool(optax.tree.get(state, "halted")) for _, state in trajectory]
    first = limit - 1 + 1 + limit - 1  # the step where the second streak reaches the limit
    assert halted == [False] * first + [True] * (len(stream) - first)  # sticky after good steps
    assert all(_finite(p) for p, _ in trajectory)
    final_params, state = trajectory[-1]
    assert int(state.skipped) == 2 * limit and int(state.consecutive_skipped) == 0
    assert max_rel_diff(final_params, trajectory[-3][0]) > 1e-3  # good steps still train


def test_outside_jit_the_limit_raises_and_the_held_state_is_the_last_good_one():
    tx = atx.skip_nonfinite(atx.adamw(0.1), max_consecutive_errors=2)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones(2)}, state, params)
    last_good = state
    _, state = tx.update({"w": jnp.array([jnp.inf, 0.0])}, state, params)  # streak 1 < 2
    assert int(state.consecutive_skipped) == 1
    with pytest.raises(FloatingPointError) as error:
        tx.update({"w": jnp.full(2, jnp.nan)}, state, params)
    assert str(error.value) == (
        "skip_nonfinite: 2 consecutive steps had non-finite gradients, updates or optimizer state "
        "(max_consecutive_errors=2); the state given to update still holds the inner state of "
        "the last good step"
    )
    _assert_bitwise_equal(state.inner_state, last_good.inner_state)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3"])
def test_max_consecutive_errors_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=r"max_consecutive_errors must be an integer >= 1, got"):
        atx.skip_nonfinite(atx.adam(0.1), max_consecutive_errors=value)


def test_non_finite_updates_from_finite_gradients_are_skipped():
    # Adam with eps = 0 on a zero gradient at the first step: m / sqrt(v) = 0 / 0 = NaN.
    tx = atx.skip_nonfinite(atx.adam(0.1, eps=0.0))
    params, g = {"w": jnp.ones(2)}, {"w": jnp.array([0.0, 1.0])}
    plain = atx.adam(0.1, eps=0.0)
    plain_updates, _ = jax.jit(plain.update)(g, plain.init(params))
    assert not _finite(plain_updates)
    updates, state = jax.jit(tx.update)(g, tx.init(params))
    assert int(state.skipped) == 1 and bool(jnp.all(updates["w"] == 0))


def test_a_state_that_would_overflow_is_skipped_even_when_the_updates_are_finite():
    """Adam on a gradient of 1e30: v = inf but m / sqrt(v) = 0 is finite, so a guard on the
    updates alone would let the Inf into the state, and every later step would be 0."""
    params, clean = {"w": jnp.ones(3)}, [{"w": jnp.array([0.5, -1.0, 2.0])}] * 4
    huge = {"w": jnp.array([1e30, 1.0, 1.0])}
    stream = clean[:2] + [huge] + clean[2:]
    plain, plain_state, _ = run(atx.adam(0.1), params, stream)
    moments = lambda state: (state[0].mu, state[0].nu)
    assert _finite(plain[2]) and not _finite(
        moments(plain_state)
    )  # the updates hid the overflow...
    np.testing.assert_array_equal(plain[-1]["w"][0], plain[2]["w"][0])  # ...and froze w[0]
    guarded, state, _ = run(atx.skip_nonfinite(atx.adam(0.1)), params, stream)
    _assert_bitwise_equal(guarded[-1], run(atx.skip_nonfinite(atx.adam(0.1)), params, clean)[0][-1])
    assert int(state.skipped) == 1 and _finite(moments(state.inner_state))


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_gradients_of_1e30_never_make_params_non_finite(row):
    """fp32 squares of 1e30 overflow to inf: with the guard, no parameter or state goes non-finite,
    and training goes on afterwards."""
    params, clean = make_params(), gradient_stream(12)
    stream = clean[:4] + [jax.tree.map(lambda g: np.sign(g) * 1e30, clean[4])] * 2 + clean[4:]
    guarded = row_stepper(row, atx.skip_nonfinite)
    iterates, state, _ = run(guarded, params, stream)
    assert all(_finite(p) for p in iterates) and _stayed_finite(guarded.tx.init(params), state)
    assert max_rel_diff(iterates[-1], iterates[6]) > 1e-3  # not frozen


def _saturate_counters(state, value):
    """Sets every int32 scalar of an optimizer state (the step counters) to `value`."""
    return jax.tree.map(
        lambda x: jnp.full_like(x, value) if x.dtype == jnp.int32 and x.ndim == 0 else x, state
    )


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_step_counters_saturate_and_bias_corrections_stay_finite(row):
    """Near the int32 maximum the counters saturate instead of wrapping, and the steps (bias
    corrections at t ~ 2**31) equal optax's, whose state is set to the same step."""
    name, kwargs = row
    params, grads = make_params(), gradient_stream(4)

    def final(tx):
        state = _saturate_counters(tx.init(params), INT32_MAX - 2)
        step = jax.jit(lambda p, s, g: tx.update(g, s, p))
        p = params
        for g in grads:
            updates, state = step(p, state, g)
            p = optax.apply_updates(p, updates)
        return p, state

    ours, state = final(_alias(row))
    theirs, _ = final(twin(name)(**kwargs))
    counters = [x for x in jax.tree.leaves(state) if x.dtype == jnp.int32 and x.ndim == 0]
    assert counters and [int(c) for c in counters] == [INT32_MAX] * len(counters)
    assert _finite(ours) and _stayed_finite(_alias(row).init(params), state)
    assert max_rel_diff(ours, params) > 1e-3
    assert max_rel_diff(ours, theirs) <= 1e-5


def test_guard_counters_saturate():
    tx = atx.skip_nonfinite(atx.adam(0.1))
    state = tx.init({"w": jnp.zeros(1)})._replace(
        skipped=jnp.int32(INT32_MAX - 1), consecutive_skipped=jnp.int32(INT32_MAX - 1)
    )
    for _ in range(3):
        _, state = jax.jit(tx.update)({"w": jnp.array([jnp.nan])}, state)
    assert int(state.skipped) == int(state.consecutive_skipped) == INT32_MAX


def test_integer_leaves_are_neither_tested_nor_zeroed():
    """Generic over pytrees: integer leaves (row indices, quantized codes) pass through."""
    identity = optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda u, s, p=None: (u, s)
    )
    tx = atx.skip_nonfinite(identity)
    rows = {"indices": jnp.array([4, 1], jnp.int32), "values": jnp.array([[1.0], [jnp.nan]])}
    updates, state = tx.update(rows, tx.init(None))
    np.testing.assert_array_equal(updates["indices"], [4, 1])
    np.testing.assert_array_equal(updates["values"], [[0.0], [0.0]])
    assert int(state.skipped) == 1


def test_prng_key_state_is_kept_on_a_bad_step():
    tx = atx.skip_nonfinite(optax.chain(optax.add_noise(0.1, 0.5, seed=0), atx.adam(0.1)))
    state = tx.init({"w": jnp.ones(3)})
    _, bad = jax.jit(tx.update)({"w": jnp.array([1.0, jnp.nan, 0.0])}, state)
    _, good = jax.jit(tx.update)({"w": jnp.ones(3)}, state)
    key = lambda s: jax.random.key_data(s.inner_state[0].rng_key)
    np.testing.assert_array_equal(key(bad), key(state))
    assert not np.array_equal(key(good), key(state))


def test_works_inside_chain_with_extra_args_and_inject_hyperparams():
    params, clean = make_params(), gradient_stream(10)
    bad, _ = _with_bad_steps(clean)
    inject = optax.inject_hyperparams(atx.adamw)(learning_rate=0.01, weight_decay=0.1)
    tx = optax.chain(optax.clip_by_global_norm(1.0), atx.skip_nonfinite(inject))
    ours, state, traces = run(tx, params, bad)
    twin = optax.inject_hyperparams(optax.adamw)(learning_rate=0.01, weight_decay=0.1)
    theirs, _, _ = run(optax.chain(optax.clip_by_global_norm(1.0), twin), params, clean)
    assert traces == 1 and optax.tree.get(state, "skipped") == 4
    assert max_rel_diff(ours[-1], theirs[-1]) <= 1e-5


def test_check_restored_state_accepts_the_right_layout_and_names_the_wrong_leaf():
    params = make_params()
    tx = atx.skip_nonfinite(atx.adam(0.1, mu_dtype=jnp.bfloat16))
    state = tx.init(params)
    assert atx.check_restored_state(tx, params, state) is state
    with pytest.raises(TypeError, match=r"leaf .inner_state\[0\]\.mu\['b'\] has dtype bfloat16"):
        atx.check_restored_state(atx.skip_nonfinite(atx.adam(0.1)), params, state)
    with pytest.raises(ValueError, match=r"leaf .inner_state\[0\]\.mu\['w'\] has shape \(6, 4\)"):
        atx.check_restored_state(tx, {**params, "w": jnp.zeros((4, 6))}, state)
    with pytest.raises(ValueError, match=r"the state's tree does not match tx.init\(params\)"):
        atx.check_restored_state(tx, params, state._asdict())


def test_soak_script_tiny_run(capsys):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import soak
    finally:
        sys.path.pop(0)
    results = soak.main(["--steps", "300", "--period", "7", "--aliases", "adagrad,nadamw"])
    assert [r["alias"] for r in results] == ["adagrad", "nadamw"]
    assert all(r["ok"] and r["skipped"] == 300 // 7 and r["bitwise"] for r in results)
    assert all(r["loss_end"] < r["loss_start"] for r in results)
    assert "all checks passed" in capsys.readouterr().out
