"""ADOPT and LaProp (adaptive_tx/normalized_momentum.py) against float64 references written from
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
from tests.test_reference import LR, LR_SCHEDULE, TOL, problem  # noqa: F401 (fixture)

ROWS = [
    ("adopt", {}),
    ("adopt", {"b1": 0.5, "b2": 0.99, "nesterov": True}),
    # (b2 = 0.99: at 0.9999, 1 - b2 from b2 rounded to float32, as optax computes it, is 2e-4 off,
    # which unclipped steps carry into the trajectory)
    ("adopt", {"use_clipping": False, "eps": 1e-3, "b2": 0.99, "learning_rate": LR_SCHEDULE}),
    ("adopt", {"clip_value_fn": lambda count: 0.5 + 0.0 * count}),
    ("laprop", {}),
    ("laprop", {"b1": 0.5, "b2": 0.9, "eps": 1e-2}),
]
RUNS = {"adopt": ref.run_adopt, "laprop": ref.run_laprop}


def _primitive(name, kwargs):
    """The primitive followed by -lr, as the alias composes it."""
    args = alias_args(name, kwargs)  # the alias's defaults (the primitive's may differ)
    lr = args.pop("learning_rate")
    scaling = {"adopt": atx.scale_by_adopt, "laprop": atx.scale_by_laprop}[name](**args)
    return optax.chain(scaling, optax.scale_by_learning_rate(lr))


@pytest.mark.parametrize("name,kwargs", ROWS)
def test_alias_and_primitive_match_float64_reference(name, kwargs, problem):
    alias = getattr(atx, name)(**{"learning_rate": LR, **kwargs})
    check_row(RUNS[name], name, kwargs, problem, alias)
    check_row(RUNS[name], name, kwargs, problem, _primitive(name, kwargs))


@pytest.mark.parametrize("name,kwargs", [r for r in ROWS if r[1]])
def test_row_setting_changes_trajectory(name, kwargs, problem):
    diff = reference(RUNS[name], name, kwargs, problem) - reference(RUNS[name], name, {}, problem)
    assert np.abs(diff).max() > 100 * TOL


def test_adopt_first_step_does_not_move_and_ignores_beta2_correlation():
    """The first step only measures v (update 0); the second divides by v_1 = g_1^2, which does
    not contain g_2 (Adam's would): g_2 = 4 g_1 gives a step clipped at c(1) = 1."""
    tx = atx.scale_by_adopt()
    state = tx.init(jnp.zeros(1))
    u1, state = tx.update(jnp.array([1.0]), state)
    u2, state = tx.update(jnp.array([4.0]), state)
    assert float(u1[0]) == 0.0
    np.testing.assert_allclose(u2, [0.1 * 1.0], rtol=1e-6)  # (1 - b1) clip(4 / 1, 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eps=0.0), "eps must be > 0"),
        (dict(b2=1.0), "b2 must be in"),
        (dict(clip_value_fn=0.5), "clip_value_fn=0.5 must be a function"),
    ],
)
def test_adopt_invalid_arguments_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        atx.adopt(0.1, **kwargs)


def test_adopt_clip_value_fn_under_inject_hyperparams_names_the_fix():
    tx = optax.inject_hyperparams(atx.adopt)(learning_rate=0.1)
    with pytest.raises(TypeError, match=r"static_args=\('clip_value_fn',\)"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))

