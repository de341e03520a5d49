"""Schedule-free AdamW (adaptive_tx/averaging.py) against a float64 reference written from the
paper, its evaluation parameters, and its errors; the table-driven properties (parity with
optax.contrib over 100 steps, row-sparse, guard, orbax, ...) are in the files that iterate over
tests/cases.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests._newer_reference import alias_args, check_row
from tests.cases import gradient_stream, make_params, max_rel_diff, run, trajectories
from tests.reference import numpy_schedule_free as ref
from tests.test_reference import LR, TOL, _assert_close, problem  # noqa: F401

ROWS = [
    ("schedule_free_adamw", {}),
    # warm-up over 16 steps, then constant; decay at y. A dyadic rate: optax's schedules compute
    # in float32 even under x64, and k * 2^-7 / 16 is exact there.
    (
        "schedule_free_adamw",
        {
            "learning_rate": 2.0**-7,
            "warmup_steps": 16,
            "b1": 0.95,
            "b2": 0.99,
            "weight_decay": 0.1,
            "eps": 1e-6,
        },
    ),
]


@pytest.mark.parametrize("name,kwargs", ROWS)
def test_alias_matches_float64_reference_and_so_do_its_eval_params(name, kwargs, problem):
    """The training parameters y_t at every step (and optax.contrib's, in float64, within 1e-12
    of the reference: its conventions are the reference's), then the average x_T the evaluation
    parameters give, against the reference's x kept as the paper keeps it."""
    tx = atx.schedule_free_adamw(**{"learning_rate": LR, **kwargs})
    check_row(ref.run_schedule_free_adamw, name, kwargs, problem, tx)
    params0, grads = problem
    iterates, state, _ = run(tx, jnp.asarray(params0, jnp.float32), grads)
    args = {k: v for k, v in alias_args(name, kwargs).items() if k != "state_dtype"}
    _, xs = ref.schedule_free_adamw_sequences(params0, grads, args.pop("learning_rate"), **args)
    x = np.asarray(atx.schedule_free_eval_params(state, iterates[-1]), np.float64)
    _assert_close(x[None], xs[-1][None], tol=TOL)
    assert np.abs(x - np.asarray(iterates[-1])).max() > 1e-3  # x is not y


def test_eval_params_are_found_inside_a_guard_and_refused_without_a_schedule_free_state():
    params = {"w": jnp.ones(3)}
    tx = atx.skip_nonfinite(atx.schedule_free_adamw(0.1))
    state = tx.init(params)
    updates, state = jax.jit(tx.update)({"w": jnp.array([1.0, -2.0, 0.0])}, state, params)
    params = optax.apply_updates(params, updates)
    inner = optax.tree.get(state, "z")
    expected = jax.tree.map(lambda y, z: (y - 0.1 * z) / 0.9, params, inner)
    np.testing.assert_allclose(
        atx.schedule_free_eval_params(state, params)["w"], expected["w"], rtol=1e-6
    )
    with pytest.raises(ValueError, match="needs the state of one schedule_free transformation"):
        atx.schedule_free_eval_params(atx.adam(0.1).init(params), params)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(b1=0.0), r"b1 must be in \(0, 1\], got b1=0.0 \(the average x"),
        (dict(b1=1.5), r"b1 must be in \(0, 1\], got b1=1.5"),
        (dict(warmup_steps=0), "warmup_steps must be an integer >= 1, got warmup_steps=0"),
        (dict(weight_lr_power=-1.0), "weight_lr_power must be >= 0"),
        (dict(learning_rate=-0.1), "learning_rate must be >= 0"),
    ],
)
def test_bad_hyperparameters_raise_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        atx.schedule_free_adamw(**kwargs)


def test_update_without_params_raises_with_the_fix():
    tx = atx.schedule_free_adamw(0.1)
    with pytest.raises(ValueError, match=r"call update\(updates, state, params\)"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))


def test_lean_state_trains_close_to_float32_in_one_jit():
    """nu in 8 bits or bfloat16: every run within 5% of the float32 run's movement (the storage
    perturbs, the rule is the same), the state kept as asked. (z in bfloat16 is not lean storage
    but the iterates rounded: steps of 0.01 on z ~ 1 move it by 13% of that movement here.)"""
    params, grads = make_params(), gradient_stream(40)
    lean = [dict(nu_dtype="int8_blockwise"), dict(nu_dtype=jnp.bfloat16)]
    txs = [atx.schedule_free_adamw(0.01, **kw) for kw in [{}, *lean]]
    full, *runs = trajectories(txs, params, grads)
    moved = max(
        float(np.max(np.abs(a[-1] - p)))
        for a, p in zip(jax.tree.leaves(full), jax.tree.leaves(params))
    )
    for kw, iterates in zip(lean, runs):
        gap = max(
            float(np.max(np.abs(a[-1] - b[-1])))
            for a, b in zip(jax.tree.leaves(iterates), jax.tree.leaves(full))
        )
        assert gap <= 0.05 * moved, (kw, gap, moved)
    int8_state = txs[1].init(params)
    assert isinstance(optax.tree.get(int8_state, "nu"), atx.QuantizedArray)
    assert optax.tree.get(txs[2].init(params), "nu")["w"].dtype == jnp.bfloat16
    bf16_z = atx.schedule_free_adamw(0.01, state_dtype=jnp.bfloat16).init(params)
    assert optax.tree.get(bf16_z, "z")["w"].dtype == jnp.bfloat16


def test_state_dtype_must_be_a_float_dtype():
    with pytest.raises(TypeError, match="state_dtype must be None or a float dtype of 16 bits"):
        atx.schedule_free_adamw(0.1, state_dtype="int8_blockwise")


def test_primitive_on_an_optax_base_equals_optax_contrib_schedule_free():
    """`schedule_free` around any base (here optax's SGD with a warm-up schedule), with a
    non-default b1 and weight_lr_power, against optax.contrib.schedule_free: one jit for both."""
    params, grads = make_params(), gradient_stream(30)
    warmup = optax.warmup_constant_schedule(0.0, 0.05, warmup_steps=8)
    kwargs = dict(learning_rate=warmup, b1=0.8, weight_lr_power=1.0)
    ours, theirs = trajectories(
        [
            atx.schedule_free(optax.sgd(warmup), **kwargs),
            optax.contrib.schedule_free(optax.sgd(warmup), **kwargs),
        ],
        params,
        grads,
    )
    assert max_rel_diff(ours, params) > 1e-2
    assert max_rel_diff(ours, theirs) <= 1e-5


def test_injected_warmup_steps_is_refused_with_the_fix_and_static_equals_optax():
    """optax.inject_hyperparams would make warmup_steps an array (optax's own fails tracing a
    bool of it): refused naming static_args; with it, optax.contrib's updates."""
    params, grads = {"w": jnp.ones(3)}, [{"w": jnp.array([1.0, -2.0, 0.5])}] * 3
    with pytest.raises(ValueError, match=r"static_args=\('warmup_steps',\)"):
        optax.inject_hyperparams(atx.schedule_free_adamw)(learning_rate=0.1, warmup_steps=2).init(
            params
        )
    static = ("warmup_steps",)
    injected = [
        optax.inject_hyperparams(f, static_args=static)(learning_rate=0.1, warmup_steps=2)
        for f in (atx.schedule_free_adamw, optax.contrib.schedule_free_adamw)
    ]
    ours, theirs = trajectories(injected, params, grads)
    assert max_rel_diff(ours, params) > 1e-2
    assert max_rel_diff(ours, theirs) <= 1e-6
