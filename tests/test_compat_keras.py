"""compat.keras presets against keras.optimizers (Keras 3, JAX backend): same float32 parameters
and gradient stream.

One table, KERAS, of (optimizer name, keras keyword arguments) drives the parity tests: every
preset with its defaults (but a learning rate large enough to move the parameters), then a grid
of non-default settings, clipping and weight decay included (Adafactor on `factoring_problem`,
which adds a 3-d stack and a 1 x n row). CONVENTIONS names, for the rows where a convention
shows, the option that carries it (of a primitive, or of the preset's chain): switching it to
optax's value must move the trajectory far from keras', so the parity test can tell the
conventions apart. Keras runs with its stateless API inside one jitted scan per case.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
    pytest.skip("keras runs with another backend: set KERAS_BACKEND=jax", allow_module_level=True)

from adaptive_tx.compat import keras as presets
from tests.cases import gradient_stream, make_params, max_rel_diff
from tests.compat_checks import (
    FLOOR,
    STEPS,
    TOL,
    check_preset,
    factoring_problem,
    force_option,
    row_id,
    run_ours,
)

SCHEDULE = optax.linear_schedule(0.05, 0.005, transition_steps=STEPS)


def keras_schedule():
    """SCHEDULE as keras writes it (its own code, not optax's)."""
    return keras.optimizers.schedules.PolynomialDecay(0.05, STEPS, 0.005, power=1.0)


KERAS = [
    ("Adagrad", dict(learning_rate=0.1)),
    (
        "Adagrad",
        dict(
            learning_rate=0.1,
            initial_accumulator_value=0.0,
            epsilon=1e-3,
            weight_decay=0.05,
            clipnorm=1.0,
        ),
    ),
    ("RMSprop", dict(learning_rate=0.01)),
    (
        "RMSprop",
        dict(learning_rate=0.01, rho=0.8, momentum=0.9, epsilon=1e-3, centered=True)
        | dict(global_clipnorm=5.0),
    ),
    ("RMSprop", dict(learning_rate=SCHEDULE, momentum=0.5, weight_decay=0.1)),
    ("Adam", dict(learning_rate=0.01)),
    ("Adam", dict(learning_rate=0.01, beta_1=0.5, epsilon=0.1, amsgrad=True)),
    ("Adam", dict(learning_rate=0.01, weight_decay=0.1, clipvalue=0.5, epsilon=0.1)),
    ("AdamW", dict(learning_rate=0.01)),
    ("AdamW", dict(learning_rate=SCHEDULE, weight_decay=0.1, amsgrad=True, epsilon=1e-3)),
    ("Adamax", dict(learning_rate=0.02)),
    ("Adamax", dict(learning_rate=0.05, beta_2=0.9, epsilon=1.0, weight_decay=0.05)),
    ("Nadam", dict(learning_rate=0.01)),
    (
        "Nadam",
        dict(learning_rate=0.01, beta_1=0.95, beta_2=0.99, epsilon=1e-3, weight_decay=0.05)
        | dict(clipnorm=10.0),
    ),
    ("Ftrl", dict(learning_rate=0.1)),
    (
        "Ftrl",
        dict(learning_rate=0.1, learning_rate_power=-0.3, initial_accumulator_value=0.0)
        | dict(l1_regularization_strength=0.5, l2_regularization_strength=0.1)
        | dict(l2_shrinkage_regularization_strength=0.05, beta=0.5, weight_decay=0.3)
        | dict(clipnorm=10.0),
    ),
    ("Lamb", dict(learning_rate=0.01)),
    ("Lamb", dict(learning_rate=SCHEDULE, beta_1=0.5, epsilon=1e-3, weight_decay=0.3)),
    ("Adafactor", dict()),
    ("Adafactor", dict(learning_rate=0.5)),  # the step is capped at 1/sqrt(t) from t = 5
    ("Adafactor", dict(learning_rate=0.5, relative_step=False)),  # keras caps it all the same
    (
        "Adafactor",
        dict(learning_rate=0.05, beta_2_decay=-0.5, epsilon_1=1e-3, epsilon_2=0.1)
        | dict(clip_threshold=0.5),
    ),
    ("Adafactor", dict(learning_rate=0.3, weight_decay=0.05, global_clipnorm=5.0)),
    ("Adafactor", dict(learning_rate=SCHEDULE, beta_2_decay=0.0, clipnorm=1.0)),
    ("Adafactor", dict(learning_rate=0.1, epsilon_2=0.0, clipvalue=0.5)),
    ("Adadelta", dict(learning_rate=1.0)),
    ("Adadelta", dict(learning_rate=0.5, rho=0.8, epsilon=1e-3, weight_decay=0.05, clipnorm=1.0)),
    ("Lion", dict(learning_rate=0.01)),
    (
        "Lion",
        dict(learning_rate=SCHEDULE, beta_1=0.5, beta_2=0.9, weight_decay=0.1, clipvalue=0.5),
    ),
]

# (row of KERAS, function the preset calls (a primitive, or the preset's chain), option, the value
# that gives optax's convention)
CONVENTIONS = [
    (KERAS[6], "scale_by_bias_corrected_moments", "eps_hat", False),
    (KERAS[6], "scale_by_bias_corrected_moments", "amsgrad_raw_max", False),
    (KERAS[11], "scale_by_inf_norm_moments", "eps_in_max", True),
    (KERAS[12], "scale_by_bias_corrected_moments", "momentum_decay", None),
    (KERAS[15], "_chain", "reads_params", False),  # FTRL's z read from parameters not decayed
    (KERAS[17], "_chain", "reads_params", False),  # the ratio's norm of parameters not decayed
    (KERAS[19], "scale_by_factored_ema_of_squares", "last_two_axes", False),
    (KERAS[19], "scale_by_factored_ema_of_squares", "min_dim_size_to_factor", 128),
    (KERAS[19], "_chain", "step_size", None),  # optax multiplies by the learning rate
    (KERAS[22], "_chain", "reads_params", False),  # the RMS of the parameters not decayed
]


@pytest.fixture(scope="module")
def problem():
    return make_params(), gradient_stream(STEPS)


def problem_for(name):
    """The parameters and gradient stream of `name`'s rows."""
    if name == "Adafactor":
        return factoring_problem()
    return make_params(), gradient_stream(STEPS)


def run_keras(name, kwargs, params, grads):
    """Every iterate of keras.optimizers.<name> over the stream (stateless_apply in a scan)."""
    return run_keras_many([(name, kwargs)], params, grads)[0]


def run_keras_many(rows, params, grads):
    """run_keras for each (name, kwargs) of `rows`, all in one jitted program (one compilation)."""
    keys = list(params)
    stream = [jnp.stack([g[k] for g in grads]) for k in keys]
    runs = []
    for name, kwargs in rows:
        if kwargs.get("learning_rate") is SCHEDULE:
            kwargs = kwargs | dict(learning_rate=keras_schedule())
        optimizer = getattr(keras.optimizers, name)(**kwargs)
        optimizer.build([keras.Variable(params[k]) for k in keys])
        start = ([jnp.asarray(params[k]) for k in keys], [v.value for v in optimizer.variables])
        runs.append((optimizer, start))

    def scan_all(starts, stream):
        outputs = []
        for (optimizer, _), start in zip(runs, starts):

            def step(carry, g, optimizer=optimizer):
                values, optimizer_values = optimizer.stateless_apply(carry[1], list(g), carry[0])
                return (values, optimizer_values), values

            outputs.append(jax.lax.scan(step, start, stream)[1])
        return outputs

    iterates = jax.jit(scan_all)([start for _, start in runs], stream)
    return [{k: np.asarray(x) for k, x in zip(keys, run)} for run in iterates]


@functools.cache
def keras_trajectory(row_index):
    """run_keras for KERAS[row_index] on the module's problem, once per row."""
    name, kwargs = KERAS[row_index]
    return run_keras(name, kwargs, *problem_for(name))


def is_plain(name, kwargs):
    """No weight decay, momentum or clipping, and a stored direction (not NAdam's look-ahead)."""
    extras = {"weight_decay", "momentum", "clipnorm", "clipvalue", "global_clipnorm"}
    return not extras & set(kwargs) and name not in ("AdamW", "Nadam", "Adafactor", "Ftrl", "Lamb")


@pytest.mark.parametrize("row", KERAS, ids=row_id)
def test_matches_keras_over_100_steps(row):
    name, kwargs = row
    params, grads = problem_for(name)
    theirs = keras_trajectory(KERAS.index(row))
    check_preset(getattr(presets, name)(**kwargs), theirs, params, grads, is_plain(name, kwargs))


@pytest.mark.parametrize(
    "row,function,option,optax_value",
    CONVENTIONS,
    ids=[f"{row_id(c[0])}-{c[2]}" for c in CONVENTIONS],
)
def test_convention_is_visible(row, function, option, optax_value, monkeypatch):
    """With the option at optax's value the preset is far from keras: the row tests it."""
    name, kwargs = row
    params, grads = problem_for(name)
    # (patched in the module that defines the preset: keras.py re-exports some of them)
    defining = sys.modules[getattr(presets, name).__module__]
    force_option(monkeypatch, defining, function, option, optax_value)
    ours, _ = run_ours(getattr(presets, name)(**kwargs), params, grads)
    assert max_rel_diff(ours, keras_trajectory(KERAS.index(row)), FLOOR) > 100 * TOL


@pytest.mark.parametrize("name", sorted({name for name, _ in KERAS}))
def test_signature_matches_keras(name):
    """keras' keyword names, defaults and kinds, less `self` and `**kwargs` (no catch-all, so
    that unknown keywords are errors and optax.inject_hyperparams can wrap the presets)."""
    theirs = list(inspect.signature(getattr(keras.optimizers, name).__init__).parameters.values())
    ours = inspect.signature(getattr(presets, name)).parameters.values()
    assert [(p.name, p.default, p.kind) for p in ours] == [
        (p.name, p.default, p.kind) for p in theirs[1:] if p.kind != p.VAR_KEYWORD
    ]


def test_options_that_do_not_change_the_math_are_ignored(problem):
    params, grads = problem
    plain = presets.Adam(0.01)
    named = presets.Adam(0.01, name="adam", ema_momentum=0.5, ema_overwrite_frequency=3)
    s1, s2 = plain.init(params), named.init(params)
    for g in grads[:3]:
        u1, s1 = plain.update(g, s1, params)
        u2, s2 = named.update(g, s2, params)
        jax.tree.map(np.testing.assert_array_equal, u1, u2)


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "Adafactor"])
def test_inject_hyperparams_equals_plain(name, problem):
    params, grads = problem
    kwargs = dict(learning_rate=0.01, weight_decay=0.1, clipnorm=10.0)
    plain, _ = run_ours(getattr(presets, name)(**kwargs), params, grads[:10])
    injected, state = run_ours(
        optax.inject_hyperparams(getattr(presets, name))(**kwargs), params, grads[:10]
    )
    assert max_rel_diff(injected, plain, FLOOR) <= 1e-5
    assert state.hyperparams["learning_rate"] == np.float32(0.01)


# (optimizer, kwargs, text the ValueError must contain)
BAD = [
    ("Adam", dict(learning_rate=-0.1), "learning_rate"),
    ("Adam", dict(beta_1=1.0), "beta_1=1.0"),
    ("Nadam", dict(beta_2=-0.5), "beta_2=-0.5"),
    ("Adamax", dict(epsilon=-1e-7), "epsilon"),
    ("RMSprop", dict(rho=1.5), "rho=1.5"),
    ("RMSprop", dict(momentum=-0.9), "momentum"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    ("AdamW", dict(weight_decay=None), "weight_decay"),
    ("AdamW", dict(weight_decay=-0.1), "weight_decay"),
    ("Adam", dict(clipnorm=1.0, clipvalue=1.0), "Only one of"),
    ("Adam", dict(clipnorm=-1.0), "clipnorm"),
    ("Adam", dict(use_ema=True), "use_ema"),
    ("Adam", dict(loss_scale_factor=128.0), "loss_scale_factor"),
    ("Adagrad", dict(gradient_accumulation_steps=4), "gradient_accumulation_steps"),
    ("Adafactor", dict(beta_2_decay=0.8), "beta_2_decay must be <= 0, got beta_2_decay=0.8"),
    ("Adafactor", dict(epsilon_1=-1e-30), "epsilon_1 must be >= 0"),
    ("Adafactor", dict(epsilon_2=-1e-3), "epsilon_2 must be >= 0"),
    ("Adafactor", dict(clip_threshold=0.0), "clip_threshold must be > 0, got clip_threshold=0.0"),
    ("Adafactor", dict(learning_rate=-1.0), "learning_rate"),
    ("Adafactor", dict(use_ema=True), "use_ema"),
    ("Ftrl", dict(learning_rate=0.0), "learning_rate must be > 0"),
    ("Ftrl", dict(learning_rate_power=0.5), "learning_rate_power must be <= 0"),
    ("Ftrl", dict(l1_regularization_strength=-1.0), "l1_regularization_strength must be >= 0"),
    ("Ftrl", dict(l2_shrinkage_regularization_strength=-1.0), "l2_shrinkage_regularization"),
    ("Ftrl", dict(beta=-0.5), "beta must be >= 0"),
]


@pytest.mark.parametrize("name,kwargs,text", BAD, ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_invalid_or_unsupported_options_raise(name, kwargs, text):
    with pytest.raises(ValueError, match=text):
        getattr(presets, name)(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(nesterov=True), dict(decay=0.1)], ids=str)
def test_unknown_keywords_raise(kwargs):
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        presets.Adam(**kwargs)


def test_complex_parameters_raise_naming_the_leaf():
    tx = presets.Nadam()
    with pytest.raises(TypeError, match=r"\['z'\].*complex"):
        tx.init({"w": np.zeros(2, np.float32), "z": np.zeros(2, np.complex64)})
