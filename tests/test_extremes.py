"""The edges: every state finite, and parity at extreme decay rates and ε.

Two properties over the one table of optimizers (tests/cases.py ALIASES, and the preset tables of
tests/test_compat_torch.py and tests/test_compat_keras.py):

* No state the library made holds a NaN or an Inf, under ``jax_debug_nans`` and ``jax_debug_infs``
  (``init`` and a few updates of every row).
* At β2 ∈ {0.9999, 0.99999} (RMSProp's decay, torch's alpha, keras' rho; Adagrad and Adafactor,
  which have none, vary ε alone) and ε ∈ {0, 1e-30}, with a learning-rate schedule (the methods
  without that pair vary their own edges: Adadelta's ρ with ε ∈ {1e-8, 1e-6}, Lion's β1 near 0
  and 1, Rprop's step-size bounds, FTRL's initial accumulator and rate power), 100 steps match
  the reference, relative to max(|θ|, 1) (parameters start ~N(0, 1); float32 rounding is an
  absolute ~1e-7 there): optax for the aliases (1e-5), torch.optim for ``compat.torch`` and keras
  for ``compat.keras`` (1e-4). This is where the scalars derived from a
  hyperparameter (1 − β, 1 − β^t, RAdam's ρ_t) show how they are computed: from β rounded to
  float32 (optax, keras) or in float64 (torch).

Each grid runs all the settings of one optimizer in one jitted program (tests/cases.py
`trajectories`, tests/test_compat_keras.py `run_keras_many`).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from adaptive_tx.moments import BiasCorrectedMomentsHyperparams
from adaptive_tx.compat import torch as torch_presets
from tests.cases import ALIASES, max_rel_diff, trajectories, twin
from tests.compat_checks import FLOOR, TOL

STEPS = 100
BETAS = (0.9999, 0.99999)
EPSILONS = (0.0, 1e-30)
SCHEDULE = optax.linear_schedule(0.05, 0.005, transition_steps=STEPS)


def extreme_problem(steps: int = STEPS, seed: int = 3):
    """One (4, 3) matrix, dense gradients with no exact zeros (ε = 0 is allowed: no 0/0), x30
    from the middle on (a second moment with β2 near 1 lags far behind)."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(4, 3))}
    grads = []
    for t in range(steps):
        scale = 30.0 if t >= steps // 2 else 1.0
        grads.append({k: scale * (rng.normal(size=v.shape) + 0.1) for k, v in params.items()})
    as32 = lambda tree: jax.tree.map(lambda x: x.astype(np.float32), tree)  # noqa: E731
    return as32(params), [as32(g) for g in grads]


def _grid(decay_name, lr_name, schedule, eps_name, **fixed):
    """Every (β2, ε) setting, or ε alone where there is no β2 (`decay_name` None)."""
    decays = [None] if decay_name is None else BETAS
    return [
        {lr_name: schedule, eps_name: eps, **fixed}
        | ({} if beta is None else {decay_name: beta})
        for beta in decays
        for eps in EPSILONS
    ]


def _with_betas(settings, key="b2", pair="betas"):
    """torch's (beta1, beta2) pair in place of the grid's b2."""
    return [{k: v for k, v in s.items() if k != key} | {pair: (0.9, s[key])} for s in settings]


ALIAS_NAMES = sorted({name for name, _ in ALIASES})


def alias_grid(name):
    if name == "adadelta":  # ε > 0 starts its steps: the ε grid is where they stay small
        return [
            {"learning_rate": SCHEDULE, "rho": rho, "eps": eps}
            for rho in BETAS
            for eps in (1e-8, 1e-6)
        ]
    if name == "lion":  # no ε: b1 at its edges instead
        return [
            {"learning_rate": SCHEDULE, "b2": b2, "b1": b1} for b2 in BETAS for b1 in (0.0, 0.9999)
        ]
    if name == "rprop":  # no β, no ε: the step-size bounds at their edges (lr: the first step)
        return [
            {"learning_rate": 0.05, "min_step_size": low, "max_step_size": high}
            for low in (0.0, 1e-30)
            for high in (1e-3, 1e30)
        ]
    if name == "adagrad":
        return _grid(None, "learning_rate", SCHEDULE, "eps")
    if name == "sm3":  # momentum near 1; optax's sm3 takes a number as its rate, and has no eps
        return [{"learning_rate": 10.0, "momentum": beta} for beta in BETAS]
    if name == "adopt":  # eps > 0, the floor its first step divides by (ValueError at 0)
        return [s for s in _grid("b2", "learning_rate", SCHEDULE, "eps") if s["eps"] > 0]
    return _grid("decay" if name == "rmsprop" else "b2", "learning_rate", SCHEDULE, "eps")


def torch_grid(name):
    if name == "Adadelta":  # as the alias: eps > 0 starts its steps
        return [{"lr": SCHEDULE, "rho": rho, "eps": eps} for rho in BETAS for eps in (1e-8, 1e-6)]
    if name == "Rprop":  # the step-size bounds at their edges (a largest step that still moves)
        return [
            {"lr": 0.05, "step_sizes": (low, high)} for low in (0.0, 1e-30) for high in (1e-2, 1e30)
        ]
    if name == "Adagrad":
        return _grid(None, "lr", SCHEDULE, "eps")
    if name == "RMSprop":
        return _grid("alpha", "lr", SCHEDULE, "eps")
    return _with_betas(_grid("b2", "lr", SCHEDULE, "eps"))


def keras_grid(name, schedule):
    if name == "Adadelta":  # as the alias: epsilon > 0 starts its steps
        return [
            {"learning_rate": schedule, "rho": rho, "epsilon": eps}
            for rho in BETAS
            for eps in (1e-8, 1e-6)
        ]
    if name == "Lion":  # no epsilon: beta_1 at its edges instead (keras refuses 0)
        return [
            {"learning_rate": schedule, "beta_2": b2, "beta_1": b1}
            for b2 in BETAS
            for b1 in (1e-6, 0.9999)
        ]
    if name == "Ftrl":  # no beta: the accumulator's start at 0 and 1e-30, a fixed and a 1/sqrt
        # rate (one number: FTRL's closed form has no schedule)
        return [
            {"learning_rate": 0.1, "initial_accumulator_value": n0, "learning_rate_power": p}
            for n0 in (0.0, 1e-30)
            for p in (0.0, -0.5)
        ]
    if name == "Adagrad":
        return _grid(None, "learning_rate", schedule, "epsilon")
    if name == "Adafactor":
        return _grid(None, "learning_rate", schedule, "epsilon_1")
    decay = "rho" if name == "RMSprop" else "beta_2"
    return _grid(decay, "learning_rate", schedule, "epsilon")


# The worst error of each grid run in this process (printed by `python -m tests.test_extremes`).
WORST: dict = {}


def _caller() -> str:
    import inspect

    frame = inspect.stack()[2]
    return f"{frame.function}:{frame.frame.f_locals.get('name')}"


def _setting_id(setting):
    return ",".join(f"{k}={v}" for k, v in setting.items() if not callable(v))


def _assert_grid(ours, theirs, settings, tol, floor, start):
    """Each setting's trajectory within `tol` of the reference's; returns the worst error."""
    errors = [max_rel_diff(a, b, floor) for a, b in zip(ours, theirs, strict=True)]
    for a, setting in zip(ours, settings):
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(a)), _setting_id(setting)
        final = jax.tree.map(lambda x: x[-1], a)
        assert max_rel_diff(final, start, FLOOR) > 1e-2, f"did not move: {_setting_id(setting)}"
    worst = max(errors)
    WORST[_caller()] = worst
    bad = [(_setting_id(s), e) for s, e in zip(settings, errors) if e > tol]
    assert not bad, bad
    return worst


@pytest.mark.parametrize("name", ALIAS_NAMES)
def test_alias_matches_optax_at_extreme_betas(name):
    params, grads = extreme_problem()
    settings = alias_grid(name)
    with jax.debug_nans(True), jax.debug_infs(True):
        ours = trajectories([getattr(atx, name)(**s) for s in settings], params, grads)
    theirs = trajectories([twin(name)(**s) for s in settings], params, grads)
    _assert_grid(ours, theirs, settings, 1e-5, FLOOR, params)


TORCH_NAMES = [
    "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Rprop"
]


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_preset_matches_torch_at_extreme_betas(name):
    from tests.test_compat_torch import run_torch

    params, grads = extreme_problem()
    settings = torch_grid(name)
    with jax.debug_nans(True), jax.debug_infs(True):
        ours = trajectories([getattr(torch_presets, name)(**s) for s in settings], params, grads)
    theirs = [run_torch(name, s, params, grads) for s in settings]
    _assert_grid(ours, theirs, settings, TOL, FLOOR, params)


KERAS_NAMES = [
    "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl", "Lamb", "Lion", "Nadam",
    "RMSprop",
]


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_preset_matches_keras_at_extreme_betas(name):
    pytest.importorskip("keras")
    from adaptive_tx.compat import keras as keras_presets
    from tests.test_compat_keras import SCHEDULE as KERAS_SCHEDULE
    from tests.test_compat_keras import run_keras_many

    params, grads = extreme_problem()
    settings = keras_grid(name, KERAS_SCHEDULE)
    with jax.debug_nans(True), jax.debug_infs(True):
        ours = trajectories([getattr(keras_presets, name)(**s) for s in settings], params, grads)
    theirs = run_keras_many([(name, s) for s in settings], params, grads)
    _assert_grid(ours, theirs, settings, TOL, FLOOR, params)


# ---- every state finite -------------------------------------------------------------------------


def _table_rows():
    """Every row of the three tables, as (id, factory)."""
    from tests.cases import case_id
    from tests.compat_checks import row_id
    from tests.test_compat_torch import TORCH

    rows = [(f"atx.{case_id(row)}", lambda row=row: getattr(atx, row[0])(**row[1])) for row in ALIASES]
    rows += [
        (f"torch.{row_id(row)}", lambda row=row: getattr(torch_presets, row[0])(**row[1]))
        for row in TORCH
    ]
    try:
        from adaptive_tx.compat import keras as keras_presets
        from tests.test_compat_keras import KERAS
    except pytest.skip.Exception:  # keras missing or on another backend
        return rows
    rows += [
        (f"keras.{row_id(row)}", lambda row=row: getattr(keras_presets, row[0])(**row[1]))
        for row in KERAS
    ]
    return rows


def test_every_state_the_library_makes_is_finite():
    """init and two updates of every row, eagerly, under jax_debug_nans and jax_debug_infs (any
    op that makes a NaN or an Inf raises), and chex.assert_tree_all_finite on every state.

    The leaves share one shape, so each row compiles its rule once."""
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.normal(size=(2, 3)), jnp.float32) for k in ("w", "b", "emb")}
    grads = [{k: jnp.asarray(rng.normal(size=(2, 3)), jnp.float32) for k in params} for _ in range(2)]
    with jax.debug_nans(True), jax.debug_infs(True):
        for row, make in _table_rows():
            tx = make()
            state = tx.init(params)
            chex.assert_tree_all_finite(state, custom_message=row)
            for g in grads:
                updates, state = tx.update(g, state, params)
                chex.assert_tree_all_finite((updates, state), custom_message=row)


def test_stored_hyperparameters_are_finite_and_read_back():
    """The state's copy of the hyperparameters holds no Inf (a constant momentum is stored as -1)
    and gives back the scale the update used (update = -rate * m), torch's float64 corrections
    included (read back from the stored 1 - β2, not from β2 rounded to float32)."""
    from adaptive_tx.diagnostics import effective_learning_rate

    params, g = {"w": jnp.ones(3)}, {"w": jnp.array([0.5, -2.0, 3.0])}
    plain = [
        torch_presets.Adam(lr=0.1, betas=(0.9, 0.99999)),
        torch_presets.RAdam(lr=0.1, betas=(0.9, 0.99999)),
    ]
    for tx in plain:
        state = tx.init(params)
        step = jax.jit(tx.update)
        for _ in range(6):  # torch's RAdam rectifies from t = 6 at this b2 (rho_6 = 6.0)
            updates, state = step(g, state, params)
        chex.assert_tree_all_finite(state)
        rate = effective_learning_rate(state)["w"]
        mu = optax.tree.get(state, "mu")["w"]
        np.testing.assert_allclose(updates["w"], -rate * mu, rtol=1e-6)
    stored = atx.nadam(0.1).init(params)[0].packed_hyperparams
    assert float(stored[BiasCorrectedMomentsHyperparams._fields.index("momentum_decay")]) == -1.0


# ---- derived constants: the defects the grids catch, at their smallest ---------------------------


def test_rmsprop_weighs_the_square_by_the_exact_one_minus_decay():
    """1 - decay from the Python float (optax, torch, keras), not from decay rounded to float32:
    the first step on g = 3 is -1 / sqrt(1 - decay) (optax: -99.999435; it was -99.99115)."""
    for decay in (0.9999, 0.99999):
        g = jnp.array([3.0])
        ours = atx.rmsprop(1.0, decay=decay, eps=0.0)
        theirs = optax.rmsprop(1.0, decay=decay, eps=0.0)
        expected = theirs.update(g, theirs.init(g))[0]
        np.testing.assert_allclose(ours.update(g, ours.init(g))[0], expected, rtol=1e-7)
        np.testing.assert_allclose(expected, -1 / np.sqrt(1 - decay), rtol=1e-6)


def test_rectification_rho_is_torchs_float64_value():
    """ρ_t against its float64 value for the same 1 - β2 (β2^t = exp(t log1p(-a)), computed without
    cancellation), where float32 cancels (optax's arithmetic): β2 = 0.99999, t = 1 gives 1."""
    from adaptive_tx.moments import rectification_rho

    t = np.array([1, 2, 5, 6, 7, 50, 1000, 100000])
    for a in (1e-7, 1e-5, 1e-4, 1e-3, 0.1, 0.5):
        log_b2t = t * np.log1p(-a)
        expected = 2 / a - 1 - 2 * t * np.exp(log_b2t) / -np.expm1(log_b2t)
        actual = np.array([float(rectification_rho(a, jnp.int32(s))) for s in t])
        np.testing.assert_allclose(actual, expected, rtol=5e-7)


@pytest.mark.parametrize("b2", BETAS)
def test_torch_radam_first_steps_at_extreme_b2(b2):
    """compat.torch.RAdam's first steps are SGD with momentum, as torch's (its first step was
    30x too small at β2 = 0.99999: -0.00365 instead of -0.1)."""
    import torch

    weights = torch.zeros(1, requires_grad=True)
    reference = torch.optim.RAdam([weights], lr=0.1, betas=(0.9, b2))
    tx = torch_presets.RAdam(lr=0.1, betas=(0.9, b2))
    params = jnp.zeros(1)
    state = tx.init(params)
    for _ in range(8):
        weights.grad = torch.ones(1)
        reference.step()
        updates, state = tx.update(jnp.ones(1), state, params)
        params = params + updates
        np.testing.assert_allclose(params, weights.detach().numpy(), rtol=1e-6)


if __name__ == "__main__":  # the worst error of every grid, for docs/conventions.md
    for name in ALIAS_NAMES:
        test_alias_matches_optax_at_extreme_betas(name)
    for name in TORCH_NAMES:
        test_torch_preset_matches_torch_at_extreme_betas(name)
    for name in KERAS_NAMES:
        test_keras_preset_matches_keras_at_extreme_betas(name)
    for key, worst in WORST.items():
        print(f"{key:60s} {worst:.2e}")
