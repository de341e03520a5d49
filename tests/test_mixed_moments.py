"""Adan and AdEMAMix (adaptive_tx/mixed_moments.py) against float64 references written from
their papers, the library's alias and primitive alike; the table-driven properties are in the
files that iterate over tests/cases.py."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests._newer_reference import alias_args, check_row, reference
from tests.reference import numpy_optimizers as ref
from tests.test_reference import LR, LR_SCHEDULE, TOL, WD_SCHEDULE, problem  # noqa: F401

# Dyadic warm-ups (exact in float32 and float64, however jit orders their arithmetic).
ALPHA_WARMUP = optax.linear_schedule(0.0, 4.0, transition_steps=64)
B3_WARMUP = optax.linear_schedule(0.875, 0.9921875, transition_steps=64)

ROWS = [
    ("adan", {}),
    ("adan", {"b1": 0.9, "b2": 0.5, "b3": 0.9, "eps_root": 0.0}),
    ("adan", {"weight_decay": WD_SCHEDULE, "learning_rate": LR_SCHEDULE}),
    ("ademamix", {}),
    ("ademamix", {"b3": B3_WARMUP, "alpha": ALPHA_WARMUP, "b2": 0.99}),
    ("ademamix", {"weight_decay": 0.1, "eps_root": 1e-3, "eps": 0.0}),
]
RUNS = {"adan": ref.run_adan, "ademamix": ref.run_ademamix}


def _primitive(name, kwargs):
    """The primitive, the weight decay and -lr, as the alias composes them."""
    args = alias_args(name, kwargs)  # the alias's defaults (the primitive's may differ)
    lr = args.pop("learning_rate")
    wd = args.pop("weight_decay")
    args.pop("mask")
    scaling = {"adan": atx.scale_by_adan, "ademamix": atx.scale_by_ademamix}[name](**args)
    return optax.chain(
        scaling, atx.add_decoupled_weight_decay(wd), optax.scale_by_learning_rate(lr)
    )


@pytest.mark.parametrize("name,kwargs", ROWS)
def test_alias_and_primitive_match_float64_reference(name, kwargs, problem):
    alias = getattr(atx, name)(**{"learning_rate": LR, **kwargs})
    check_row(RUNS[name], name, kwargs, problem, alias)
    check_row(RUNS[name], name, kwargs, problem, _primitive(name, kwargs))


@pytest.mark.parametrize("name,kwargs", [r for r in ROWS if r[1]])
def test_row_setting_changes_trajectory(name, kwargs, problem):
    diff = reference(RUNS[name], name, kwargs, problem) - reference(RUNS[name], name, {}, problem)
    assert np.abs(diff).max() > 100 * TOL


def test_adan_difference_moment_starts_at_the_second_step():
    """Delta_1 = 0 (no previous gradient), Delta_2 = g_2 - g_1: the difference moment after two
    steps is (1 - b2) (g_2 - g_1), whatever the initial zeros of the last-gradient statistic."""
    tx = atx.scale_by_adan(b2=0.5)
    state = tx.init(jnp.zeros(2))
    _, state = tx.update(jnp.array([3.0, -1.0]), state)
    np.testing.assert_array_equal(state.v, [0.0, 0.0])
    _, state = tx.update(jnp.array([5.0, -1.0]), state)
    np.testing.assert_allclose(state.v, [1.0, 0.0])  # 0.5 * (5 - 3)
    np.testing.assert_array_equal(state.g, [5.0, -1.0])


@pytest.mark.parametrize(
    "factory,kwargs,match",
    [
        (atx.adan, dict(b3=1.0), "b3 must be in"),
        (atx.adan, dict(eps_root=-1.0), "eps_root must be >= 0"),
        (atx.ademamix, dict(b3=1.5), "b3 must be in"),
        (atx.ademamix, dict(alpha=-1.0), "alpha must be >= 0"),
    ],
)
def test_invalid_arguments_raise(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(0.1, **kwargs)


def test_ademamix_scheduled_b3_out_of_range_is_caught_where_it_is_used():
    """A schedule's value is checked as the step sees it: traced, so the guard turns the update
    NaN (see adaptive_tx/_validate.py) rather than silently using b3 >= 1."""
    tx = atx.ademamix(0.1, b3=lambda count: 1.0 + 0.0 * count)
    updates, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), jnp.zeros(2))
    assert not np.all(np.isfinite(updates))
