"""from_optax_state: a run of optax, converted mid-way, continues as the uninterrupted optax run.

For every row of the table (and adafactor), optax runs SAVE_AT steps, its state is converted to
the adaptive_tx twin's, and adaptive_tx runs the remaining steps: the parameters equal those of
optax's uninterrupted run (1e-5). One row per alias and layout of optax's state; the rmsprop,
adamaxw and adafactor states also go through an orbax checkpoint (restored with optax's own state
as the target) before the conversion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
import pytest

import adaptive_tx as atx
from tests.cases import (
    optax_twin,
    ALIASES,
    FACTORED,
    case_id,
    gradient_stream,
    make_params,
    max_rel_diff,
)

STEPS, SAVE_AT = 8, 5


def _layouts(rows):
    """One row per alias and layout of its optax state (what the conversion depends on)."""
    seen, kept = set(), []
    for name, kwargs in rows:
        state = jax.eval_shape(optax_twin(name)(**kwargs).init, make_params())
        key = (name, str(jax.tree.structure(state)))
        if key not in seen:
            seen.add(key)
            kept.append((name, kwargs))
    return kept


LAYOUTS = _layouts(ALIASES + FACTORED)


def _stepper(tx):
    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _optax_run(name, kwargs, params, grads):
    """optax's parameters after every step, and its state after SAVE_AT steps."""
    tx = optax_twin(name)(**kwargs)
    step, state, saved = _stepper(tx), tx.init(params), None
    for t, g in enumerate(grads):
        if t == SAVE_AT:
            saved = (params, state)
        params, state = step(params, state, g)
    return params, saved


def _resume(name, kwargs, params, state, grads):
    tx = getattr(atx, name)(**kwargs)
    state = atx.from_optax_state(tx, params, state)
    chex_like = jax.eval_shape(tx.init, params)
    assert jax.tree.structure(state) == jax.tree.structure(chex_like)
    step = _stepper(tx)
    for g in grads[SAVE_AT:]:
        params, state = step(params, state, g)
    return params


# These rows' optax states go through an orbax checkpoint (restored with optax's state as target).
THROUGH_ORBAX = ("rmsprop", "adamaxw", "adafactor")


def _through_orbax(directory, params, state, target_state):
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / "ckpt", {"params": params, "state": state})
    target = jax.eval_shape(lambda: {"params": params, "state": target_state})
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(directory / "ckpt", target)
    return restored["params"], restored["state"]


@pytest.mark.parametrize("row", LAYOUTS, ids=case_id)
def test_resumes_an_optax_run(row, tmp_path):
    name, kwargs = row
    params, grads = make_params(), gradient_stream(STEPS)
    expected, (saved_params, saved_state) = _optax_run(name, kwargs, params, grads)
    if name in THROUGH_ORBAX:
        target = optax_twin(name)(**kwargs).init(params)
        saved_params, saved_state = _through_orbax(tmp_path, saved_params, saved_state, target)
    resumed = _resume(name, kwargs, saved_params, saved_state, grads)
    assert max_rel_diff(resumed, saved_params) > 1e-4, "the resumed steps did not move"
    assert max_rel_diff(resumed, expected) <= 1e-5


def test_resumes_an_optax_run_under_inject_hyperparams():
    params, grads = make_params(), gradient_stream(STEPS)
    kwargs = dict(learning_rate=0.01, weight_decay=0.1)
    theirs = optax.inject_hyperparams(optax.adamw)(**kwargs)
    step, state = _stepper(theirs), theirs.init(params)
    for g in grads[:SAVE_AT]:
        params, state = step(params, state, g)
    saved_params, saved_state = params, state
    for g in grads[SAVE_AT:]:
        params, state = step(params, state, g)
    ours = optax.inject_hyperparams(atx.adamw)(**kwargs)
    resumed_state = atx.from_optax_state(ours, saved_params, saved_state)
    resumed, our_step = saved_params, _stepper(ours)
    for g in grads[SAVE_AT:]:
        resumed, resumed_state = our_step(resumed, resumed_state, g)
    assert max_rel_diff(resumed, params) <= 1e-5
    assert int(optax.tree.get(resumed_state, "count", filtering=_outer)) == STEPS


def _outer(path, value):
    return len(path) == 1


@pytest.mark.parametrize(
    "make_tx, make_optax, match",
    [
        (lambda: atx.rowwise_adagrad(0.1), lambda: optax.adagrad(0.1), "sum_of_squares"),
        (lambda: atx.adam(0.1, mu_dtype="int8_blockwise"), lambda: optax.adam(0.1), "Quantized"),
        (lambda: atx.skip_nonfinite(atx.adam(0.1)), lambda: optax.adam(0.1), "SkipNonfinite"),
        (lambda: atx.adam(0.1), lambda: optax.adagrad(0.1), "'mu'"),
        (
            lambda: atx.adamw(0.1, weight_decay=optax.constant_schedule(0.1)),
            lambda: optax.adam(0.1),
            "the weight decay",
        ),
    ],
    ids=["rowwise", "int8", "guard", "other-optimizer", "missing-part"],
)
def test_what_cannot_be_converted_is_named(make_tx, make_optax, match):
    params = {"w": jnp.ones((4, 3))}
    tx, theirs = make_tx(), make_optax()
    with pytest.raises(ValueError, match=match):
        atx.from_optax_state(tx, params, theirs.init(params))
