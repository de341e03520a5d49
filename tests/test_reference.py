"""The float64 NumPy references against optax and against adaptive_tx.

(a) test_reference_matches_optax: the reference against the optax optimizer of
    the same name; optax owns the conventions, so this validates the reference.
(b) test_primitive_matches_reference: the adaptive_tx primitive, composed with
    the learning rate the way optax composes its alias, against the reference.
(c) test_alias_matches_reference: the adaptive_tx alias against the reference.

test_optax_float32_meets_tolerance calibrates TOL (float32 optax against the
reference), and test_row_setting_changes_trajectory checks that every
non-default row is far enough from the defaults to be told apart.

One table, ROWS, of (alias name, alias kwargs) drives all of them. The library
runs in float32 under jax.jit, the reference in float64.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.cases import run, twin
from tests.reference import numpy_optimizers as ref

STEPS = 100
SHAPE = (4, 5)
LR = 1e-2
TOL = 1e-5  # float32 library vs float64 reference
TOL_X64 = 1e-12  # float64 optax vs float64 reference

# Dyadic values: every value of these schedules is exact in float32 (and float64),
# whichever way jit orders their arithmetic, so both sides see identical rates.
LR_SCHEDULE = optax.linear_schedule(2.0**-6, 2.0**-9, transition_steps=64)
WD_SCHEDULE = optax.linear_schedule(0.5, 0.0, transition_steps=64)

# (name of the optax / adaptive_tx alias, its kwargs; learning_rate defaults to LR).
# eps is raised where a setting only shows when eps is not negligible, and
# the learning rate is a schedule where a setting only shows when it varies
# (with a constant rate, "lr before momentum" equals "lr after momentum").
ROWS = [
    ("adagrad", {}),
    ("adagrad", {"initial_accumulator_value": 0.0, "learning_rate": LR_SCHEDULE}),
    (
        "adagrad",
        {"initial_accumulator_value": 0.0, "eps": 0.0},
    ),  # NaN unless the G > 0 branch is taken
    ("rmsprop", {}),
    ("rmsprop", {"centered": True}),
    ("rmsprop", {"eps_in_sqrt": False, "eps": 0.1}),
    ("rmsprop", {"bias_correction": True}),
    # eps 0.1: at t = 1 the bias-corrected centered variance is exactly 0, and
    # its float32 rounding noise (~1e-7 g^2) must be negligible next to eps.
    ("rmsprop", {"centered": True, "bias_correction": True, "eps": 0.1}),
    ("rmsprop", {"initial_scale": 1.0}),
    ("rmsprop", {"initial_scale": 1.0, "bias_correction": True, "decay": 0.99}),
    ("rmsprop", {"momentum": 0.9}),
    ("rmsprop", {"momentum": 0.9, "nesterov": True, "learning_rate": LR_SCHEDULE}),
    ("rmsprop", {"momentum": 0.5, "centered": True, "learning_rate": LR_SCHEDULE}),
    ("adam", {}),
    ("adam", {"b1": 0.5, "b2": 0.9}),
    ("adam", {"nesterov": True}),
    ("adam", {"eps": 0.0, "eps_root": 1e-2}),
    ("nadam", {}),
    ("adamw", {"weight_decay": 0.1}),
    ("adamw", {"weight_decay": WD_SCHEDULE, "learning_rate": LR_SCHEDULE}),
    ("nadamw", {"weight_decay": 0.1}),
    ("amsgrad", {}),
    ("amsgrad", {"bias_correction_mu": False}),
    ("amsgrad", {"bias_correction_nu": False}),
    ("amsgrad", {"b2": 0.9, "eps_root": 1e-3}),
    ("adamax", {}),
    ("adamax", {"b1": 0.5, "b2": 0.9, "eps": 1e-2}),
    ("adamaxw", {"weight_decay": 0.1}),
    ("radam", {}),
    # rho_t crosses the threshold mid-run: at t = 41 (b2 = 0.999: rho_40 = 39.73,
    # rho_41 = 40.72) and at t = 22 (b2 = 0.99: rho_21 = 20.26, rho_22 = 21.19).
    ("radam", {"threshold": 40.2}),
    ("radam", {"threshold": 20.7, "b2": 0.99, "nesterov": True}),
    # b2 = 0: rho_t = rho_inf = 1 exactly at every step (and r_t = 1), so the threshold 1 is
    # met with equality, and >= rectifies every step (the strict > of torch never does).
    ("radam", {"b2": 0.0, "eps": 1.0, "threshold": 1.0}),
    ("lamb", {}),
    ("lamb", {"b1": 0.5, "eps_root": 1e-4, "weight_decay": 0.1, "learning_rate": LR_SCHEDULE}),
    ("adadelta", {}),
    ("adadelta", {"rho": 0.5, "eps": 1e-3, "weight_decay": 0.1, "learning_rate": LR_SCHEDULE}),
    ("lion", {}),
    ("lion", {"b1": 0.5, "b2": 0.9, "weight_decay": WD_SCHEDULE, "learning_rate": LR_SCHEDULE}),
    ("adabelief", {}),
    ("adabelief", {"b1": 0.5, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-8, "nesterov": True}),
    ("yogi", {}),
    ("yogi", {"b1": 0.5, "b2": 0.9, "eps": 1e-5}),
    ("rprop", {}),
    ("rprop", {"eta_minus": 0.3, "eta_plus": 1.5, "min_step_size": 1e-3, "max_step_size": 0.02}),
    ("sm3", {}),
    ("novograd", {}),
]

REFERENCE = {
    "adagrad": ref.run_adagrad,
    "rmsprop": ref.run_rmsprop,
    "adam": ref.run_adam,
    "nadam": ref.run_adam,
    "adamw": ref.run_adam,
    "nadamw": ref.run_adam,
    "amsgrad": ref.run_amsgrad,
    "adamax": ref.run_adamax,
    "adamaxw": ref.run_adamax,
    "radam": ref.run_radam,
    "lamb": ref.run_lamb,
    "adadelta": ref.run_adadelta,
    "lion": ref.run_lion,
    "adabelief": ref.run_adabelief,
    "yogi": ref.run_yogi,
    "rprop": ref.run_rprop,
    "sm3": ref.run_sm3,
    "novograd": ref.run_novograd,
}


def _tolerance(name, kwargs):
    """TOL, except for radam's defaults, where float32 itself (optax and this library alike) is
    1.6e-5 off: rho_inf = 2/(1-b2) - 1 comes from the exact b2 but b2^t from b2 rounded to float32
    (1 - b2 off by 1.3e-5 relative), and the cancellation in rho_t near t = 6, where rectification
    starts, turns that into ~1% of r_t. The library keeps optax's arithmetic (parity with optax is
    the contract); computing both from the same float32 b2 would give 9e-7."""
    return 2e-5 if (name, kwargs) == ("radam", {}) else TOL


def _row_id(row):
    name, kwargs = row
    return "-".join([name] + [f"{k}={'sched' if callable(v) else v}" for k, v in kwargs.items()])


rows = pytest.mark.parametrize("name,kwargs", ROWS, ids=[_row_id(r) for r in ROWS])


@pytest.fixture(scope="module")
def problem():
    """params0 ~ N(0, 1) and 100 gradients: row 1 zero on most steps (all of
    the first 20), entry [3, 4] always zero, everything x100 from step 50.
    Values are rounded to float32 so both sides see exactly the same inputs."""
    rng = np.random.default_rng(0)
    params0 = rng.standard_normal(SHAPE)
    grads = rng.standard_normal((STEPS,) + SHAPE)
    steps = np.arange(STEPS)
    grads[(steps < 20) | (steps % 7 != 3), 1] = 0.0
    grads[:, 3, 4] = 0.0
    grads[STEPS // 2 :] *= 100.0
    as32 = lambda x: x.astype(np.float32).astype(np.float64)
    return as32(params0), list(as32(grads))


def _alias_args(name, kwargs):
    """The row's arguments with the alias defaults (optax's signature) filled in."""
    bound = inspect.signature(getattr(optax, name)).bind(**{"learning_rate": LR, **kwargs})
    bound.apply_defaults()
    return dict(bound.arguments)


def _reference(name, kwargs, problem):
    args = _alias_args(name, kwargs)
    run = REFERENCE[name]
    hyper = {k: v for k, v in args.items() if k in inspect.signature(run).parameters}
    ignored = set(args) - set(hyper) - {"learning_rate", "mu_dtype", "mask", "weight_decay_mask"}
    assert not ignored, f"{run.__name__} ignores {ignored}"
    return np.stack(run(*problem, args["learning_rate"], **hyper))


def _run_jax(tx, problem, dtype=jnp.float32):
    """Every iterate of `tx` in `dtype`, one jitted step reused for all steps."""
    params0, grads = problem
    cast = lambda x: jnp.asarray(x, dtype)
    iterates, _, _ = run(tx, cast(params0), [cast(g) for g in grads])
    return np.asarray(jnp.stack(iterates), np.float64)


def _assert_close(actual, expected, tol=TOL):
    # Error relative to max(|expected|, 1), over all 100 iterates. Float32
    # rounding error in p accumulates in absolute terms at the scale of the
    # values the trajectory passes through (|p| ~ 1, initialised N(0, 1)), not
    # at the scale where a coordinate ends up, so a plain relative error blows
    # up for a coordinate passing near zero. So this is a relative tolerance
    # for |p| >= 1 and an absolute one below; float32 alone gives ~1e-6.
    assert np.all(np.isfinite(actual)), "non-finite parameters"
    err = np.abs(actual - expected) / np.maximum(np.abs(expected), 1.0)
    step, *where = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= tol, (
        f"max relative difference {err.max():.3g} at step {step + 1}, entry {tuple(where)}: "
        f"{actual[(step, *where)]!r} vs reference {expected[(step, *where)]!r}"
    )


def _scale_by_lr(lr):
    """optax.scale(-lr), or its schedule form (evaluated at the step count)."""
    if callable(lr):
        return optax.scale_by_schedule(lambda count: -lr(count))
    return optax.scale(-lr)


def _primitive(name, kwargs):
    """The adaptive_tx primitive for `name`, composed as optax composes the alias."""
    import adaptive_tx as atx

    a = _alias_args(name, kwargs)
    pick = lambda *keys: {k: a[k] for k in keys}
    if name == "adagrad":
        chain = [atx.scale_by_sum_of_squares(**pick("initial_accumulator_value", "eps"))]
    elif name == "rmsprop":
        chain = [
            atx.scale_by_ema_of_squares(
                **pick(
                    "decay", "eps", "initial_scale", "eps_in_sqrt", "centered", "bias_correction"
                )
            )
        ]
        if a["momentum"] is not None:  # the learning rate comes before momentum
            return optax.chain(
                *chain,
                _scale_by_lr(a["learning_rate"]),
                optax.trace(decay=a["momentum"], nesterov=a["nesterov"]),
            )
    elif name in ("adam", "nadam", "adamw", "nadamw", "amsgrad"):
        chain = [
            atx.scale_by_bias_corrected_moments(
                **pick("b1", "b2", "eps", "eps_root"),
                nesterov=a.get("nesterov", False),
                amsgrad=name == "amsgrad",
                bias_correction_mu=a.get("bias_correction_mu", True),
                bias_correction_nu=a.get("bias_correction_nu", True),
            )
        ]
    elif name in ("adamax", "adamaxw"):
        chain = [atx.scale_by_inf_norm_moments(**pick("b1", "b2", "eps"))]
    elif name == "radam":
        chain = [
            atx.scale_by_rectified_moments(
                **pick("b1", "b2", "eps", "eps_root", "threshold", "nesterov")
            )
        ]
    elif name == "lamb":
        chain = [atx.scale_by_bias_corrected_moments(**pick("b1", "b2", "eps", "eps_root"))]
    elif name == "adadelta":  # the L2 term comes before the scaling
        return optax.chain(
            optax.add_decayed_weights(a["weight_decay"]),
            atx.scale_by_adadelta(**pick("rho", "eps")),
            _scale_by_lr(a["learning_rate"]),
        )
    elif name == "lion":
        chain = [atx.scale_by_lion(**pick("b1", "b2"))]
    elif name == "adabelief":
        chain = [atx.scale_by_belief(**pick("b1", "b2", "eps", "eps_root", "nesterov"))]
    elif name == "yogi":
        chain = [atx.scale_by_yogi(**pick("b1", "b2", "eps"))]
    elif name == "rprop":  # the learning rate is the initial step size; the step is -u_t
        args = pick("learning_rate", "eta_minus", "eta_plus", "min_step_size", "max_step_size")
        return optax.chain(atx.scale_by_rprop(**args), optax.scale(-1.0))
    elif name == "sm3":
        chain = [atx.scale_by_sm3(b1=a["momentum"])]
    elif name == "novograd":
        keys = ("b1", "b2", "eps", "eps_root", "weight_decay")
        return optax.chain(atx.scale_by_novograd(**pick(*keys)), _scale_by_lr(a["learning_rate"]))
    else:
        raise ValueError(name)
    if "weight_decay" in a:
        chain.append(atx.add_decoupled_weight_decay(a["weight_decay"]))
    if name == "lamb":
        chain.append(atx.scale_by_trust_ratio())
    return optax.chain(*chain, _scale_by_lr(a["learning_rate"]))


@rows
def test_reference_matches_optax(name, kwargs, problem):
    # optax runs in float64 here, so the reference's conventions are checked far
    # below float32 noise (they agree to ~1e-15): even where an eps of 1e-8 sits
    # would show at TOL_X64.
    with jax.enable_x64(True):
        tx = twin(name)(**{"learning_rate": LR, **kwargs})
        actual = _run_jax(tx, problem, jnp.float64)
        _assert_close(actual, _reference(name, kwargs, problem), tol=TOL_X64)


@rows
def test_optax_float32_meets_tolerance(name, kwargs, problem):
    """Calibrates TOL: float32 optax, like the library, against the reference."""
    tx = twin(name)(**{"learning_rate": LR, **kwargs})
    _assert_close(
        _run_jax(tx, problem), _reference(name, kwargs, problem), _tolerance(name, kwargs)
    )


@pytest.mark.parametrize(
    "name,kwargs", [r for r in ROWS if r[1]], ids=[_row_id(r) for r in ROWS if r[1]]
)
def test_row_setting_changes_trajectory(name, kwargs, problem):
    """Each non-default setting in the table visibly changes the trajectory, so
    the comparisons above can tell it apart from the default."""
    diff = np.abs(_reference(name, kwargs, problem) - _reference(name, {}, problem))
    assert diff.max() > 100 * TOL


def test_centered_first_step_variance_is_not_nan(problem):
    """Centered RMSProp with bias correction and eps outside the root: the first step's variance
    is g^2 - g^2 = 0, which float32 leaves a few ulps either side of 0. Below 0 its root was NaN
    (in optax too, where its rounding lands there); above, sqrt(ulp(g^2)) ~ 3.5e-4 |g| next to eps
    = 0.1 moves the step by up to ~3.5e-3 |g| relative, so the float32 trajectory is held to 1e-3
    of the float64 one (measured: this library 7.7e-4, optax 8.5e-4: both weigh g by 1 - rho from
    the exact rho and correct by 1 - rho^t from rho rounded to float32), not to TOL."""
    import adaptive_tx as atx

    kwargs = dict(centered=True, bias_correction=True, eps_in_sqrt=False, eps=0.1)
    actual = _run_jax(atx.rmsprop(learning_rate=LR, **kwargs), problem)
    assert np.all(np.isfinite(actual))
    _assert_close(actual, _reference("rmsprop", kwargs, problem), tol=1e-3)


@rows
def test_primitive_matches_reference(name, kwargs, problem):
    _assert_close(
        _run_jax(_primitive(name, kwargs), problem),
        _reference(name, kwargs, problem),
        _tolerance(name, kwargs),
    )


@rows
def test_alias_matches_reference(name, kwargs, problem):
    import adaptive_tx as atx

    tx = getattr(atx, name)(**{"learning_rate": LR, **kwargs})
    _assert_close(
        _run_jax(tx, problem), _reference(name, kwargs, problem), _tolerance(name, kwargs)
    )


# The primitives' options for other frameworks' conventions (compat presets), which optax lacks:
# each primitive, followed by the learning rate, against the float64 reference with the same
# option. (reference name, keyword arguments shared by the primitive and the reference).
OPTION_ROWS = [
    ("adam", {"eps_hat": True, "eps": 1e-2}),
    ("adam", {"nesterov": True, "momentum_decay": 0.004}),
    ("adam", {"nesterov": True, "momentum_decay": 1.0, "b1": 0.95, "b2": 0.99}),
    ("adam", {"nesterov": True, "momentum_decay": 0.0, "eps_hat": True, "eps": 1e-2}),
    ("amsgrad", {"amsgrad_raw_max": True}),
    ("amsgrad", {"amsgrad_raw_max": True, "eps_hat": True, "eps": 1e-2, "b2": 0.9}),
    ("amsgrad", {"amsgrad_raw_max": True, "bias_correction_mu": False, "eps_root": 1e-3}),
    ("adamax", {"eps_in_max": False, "eps": 1e-1, "b2": 0.9}),
    ("radam", {"eps_hat": True, "eps": 0.1, "b2": 0.99}),
    # rho_t = 1 = threshold at every step (see ROWS): never rectified with the strict >.
    ("radam", {"b2": 0.0, "eps": 1.0, "threshold": 1.0, "strict_threshold": True}),
]
NEW_OPTIONS = {"eps_hat", "momentum_decay", "amsgrad_raw_max", "eps_in_max", "strict_threshold"}


def _option_primitive(name, kwargs):
    import adaptive_tx as atx

    factory = {
        "adam": atx.scale_by_bias_corrected_moments,
        "amsgrad": functools.partial(atx.scale_by_bias_corrected_moments, amsgrad=True),
        "adamax": atx.scale_by_inf_norm_moments,
        "radam": atx.scale_by_rectified_moments,
    }[name]
    return optax.chain(factory(**kwargs), optax.scale(-LR))


options = pytest.mark.parametrize("name,kwargs", OPTION_ROWS, ids=[_row_id(r) for r in OPTION_ROWS])


@options
def test_primitive_option_matches_reference(name, kwargs, problem):
    expected = np.stack(REFERENCE[name](*problem, LR, **kwargs))
    _assert_close(_run_jax(_option_primitive(name, kwargs), problem), expected)


@options
def test_option_changes_trajectory(name, kwargs, problem):
    """Each row differs from the same row with optax's conventions (the new options off)."""
    optax_kwargs = {k: v for k, v in kwargs.items() if k not in NEW_OPTIONS}
    with_options = np.stack(REFERENCE[name](*problem, LR, **kwargs))
    if "momentum_decay" in kwargs:  # NAdam without the schedule is optax's nesterov
        optax_kwargs["nesterov"] = True
    without = np.stack(REFERENCE[name](*problem, LR, **optax_kwargs))
    assert np.abs(with_options - without).max() > 100 * TOL
