"""Hypothesis property tests: random pytrees and random valid hyperparameters, every alias.

Trees mix dicts, lists and tuples with scalars, 0-size arrays and empty subtrees (None, [], {});
gradients have exact zeros and a random scale. For each alias, hyperparameters are drawn from
well-conditioned valid ranges (the ill-conditioned corners, e.g. a centered variance that is exactly
0, are pinned as fixed rows in tests/test_reference.py), and:

- float32 / bfloat16 / float64 (under x64): every leaf equals the float64 NumPy reference
  (tests/reference/numpy_optimizers.py) within a tolerance set by the dtype;
- complex64: equals optax (the reference is written for real numbers; optax supports complex for
  all these aliases, with |g|^2 as the square);
- one trace for all steps (no recompilation), parameters and state keep their dtypes.

Example counts are small so the suite stays fast; ADAPTIVE_TX_EXAMPLES=50 runs a longer search.
"""

from __future__ import annotations

import inspect
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import adaptive_tx as atx
from tests.cases import (
    ALIASES,
    CONVERGENCE_LR,
    DEFAULTS,
    FACTORED,
    case_id,
    gradient_stream,
    make_params,
    max_rel_diff,
    run,
    twin,
)
from tests.test_reference import _reference

STEPS = 8
NAMES = ["adagrad", "rmsprop", "adam", "adamw", "nadam", "nadamw", "amsgrad", "adamax", "adamaxw"]
NAMES += ["radam"]
EXAMPLES = int(os.environ.get("ADAPTIVE_TX_EXAMPLES", "2"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=EXAMPLES <= 2,  # the default suite is reproducible; longer searches are random
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# max |library - reference| / max(|reference|, 1) over all leaves and steps, by dtype.
# float32: a few ulps per step; bfloat16: the parameters are rounded to 8 bits every step
# (2**-8 relative, STEPS times); float64: exact up to float64 rounding.
TOL = {jnp.float32: 1e-5, jnp.bfloat16: STEPS * 2**-8, jnp.float64: 1e-10}


class _Shape:
    """A leaf of a random tree of shapes (deliberately not a pytree node)."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def __repr__(self):
        return f"Shape{self.shape}"


_shapes = st.lists(st.integers(0, 3), max_size=3).map(_Shape)  # (), (0,), (2, 0, 3), ...
_subtrees = st.recursive(
    st.one_of(_shapes, st.none()),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from("abcde"), children, max_size=3),
        st.tuples(children, children),
    ),
    max_leaves=5,
)
# Every tree also holds one non-empty matrix or vector, so that no example is vacuous.
_trees = st.tuples(st.lists(st.integers(1, 3), min_size=1, max_size=2).map(_Shape), _subtrees).map(
    lambda pair: {"w": pair[0], "p": pair[1]}
)

_decay = st.floats(0.0, 0.95)
_eps = st.integers(-8, -2).map(lambda e: 10.0**e)
_lr = st.integers(-10, -4).map(lambda e: 2.0**e)  # dyadic: exact in float32, so x64 is exact too


@st.composite
def _hyperparameters(draw, name):
    """Valid, well-conditioned keyword arguments for alias `name`, and the gradient scale."""
    kw = {"learning_rate": draw(_lr)}
    scale = draw(st.sampled_from([1e-2, 1.0, 1e2]))
    if name == "adagrad":
        kw.update(initial_accumulator_value=draw(st.floats(0.0, 1.0)), eps=draw(_eps))
    elif name == "rmsprop":
        centered = draw(st.booleans())
        kw.update(
            decay=draw(st.floats(0.5, 0.95) if centered else _decay),
            eps=draw(_eps),
            initial_scale=draw(st.floats(0.0, 1.0)),
            eps_in_sqrt=draw(st.booleans()),
            centered=centered,
            momentum=draw(st.none() | st.floats(0.0, 0.9)),
            nesterov=draw(st.booleans()),
            bias_correction=draw(st.booleans()),
        )
        if kw["momentum"] is None:  # nesterov without momentum is refused (optax ignores it)
            kw["nesterov"] = False
        if centered and kw["bias_correction"]:
            # the first bias-corrected centered variance is exactly 0: eps must dominate its
            # float32 rounding noise (~1e-7 g^2)
            kw["eps"], scale = 0.1, 1.0
    else:
        kw.update(b1=draw(_decay), eps=draw(_eps))
        if name != "adamax" and name != "adamaxw":
            kw["eps_root"] = draw(st.just(0.0) | _eps)
        kw["b2"] = draw(st.floats(0.5, 0.99) if name == "radam" else st.floats(0.5, 0.999))
        if name.endswith("w"):
            kw["weight_decay"] = draw(st.floats(0.0, 0.5))
        if name in ("adam", "radam"):
            kw["nesterov"] = draw(st.booleans())
        if name == "amsgrad":
            kw.update(
                bias_correction_mu=draw(st.booleans()), bias_correction_nu=draw(st.booleans())
            )
        if name == "radam":
            kw["threshold"] = draw(st.floats(4.5, 8.0))
            b2, t = kw["b2"], np.arange(1, STEPS + 1)
            rho = 2 / (1 - b2) - 1 - 2 * t * b2**t / (1 - b2**t)
            # float32 and float64 must take the same branch: rho_t not too near the threshold
            assume(np.min(np.abs(rho - kw["threshold"])) > 1e-2)
    return kw, scale


def _materialize(shapes, dtype, seed, scale):
    """Params (N(0, 1)) and STEPS gradients (N(0, scale^2), a third of them exactly 0)."""
    rng = np.random.default_rng(seed)

    def normal(shape, s=1.0):
        x = rng.normal(size=shape) * s
        if np.issubdtype(dtype, np.complexfloating):
            x = x + 1j * rng.normal(size=shape) * s
        return np.asarray(x, dtype)

    params = jax.tree.map(lambda s: normal(s.shape), shapes)
    grads = [
        jax.tree.map(lambda s: normal(s.shape, scale) * (rng.random(s.shape) > 1 / 3), shapes)
        for _ in range(STEPS)
    ]
    return params, grads


def _check_properties(tx, params, grads):
    """Runs tx; checks one trace and stable dtypes; returns every iterate."""
    iterates, state, traces = run(tx, params, grads)
    assert traces == 1, "the jitted step recompiled across steps"
    chex.assert_trees_all_equal_shapes_and_dtypes(iterates[-1], params)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, tx.init(params))
    return iterates


def _assert_matches_reference(name, kwargs, params, grads, iterates, tol):
    """Each leaf's trajectory against the float64 reference run on that leaf alone."""
    leaves = jax.tree.leaves(params)
    grad_leaves = [jax.tree.leaves(g) for g in grads]
    actual = [jax.tree.leaves(p) for p in iterates]
    for i, p0 in enumerate(leaves):
        p0 = np.asarray(p0, np.float64)
        expected = _reference(
            name, kwargs, (p0, [np.asarray(g[i], np.float64) for g in grad_leaves])
        )
        got = np.stack([np.asarray(a[i], np.float64) for a in actual])
        assert np.all(np.isfinite(got)), f"leaf {i}: non-finite parameters"
        err = np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1.0), initial=0.0)
        assert err <= tol, f"leaf {i} of shape {p0.shape}: max relative difference {err:.3g}"


def _problem(name):
    return st.tuples(_trees, _hyperparameters(name), st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(problem=st.data())
def test_random_trees_and_hyperparameters_match_the_float64_reference(name, dtype, problem):
    shapes, (kwargs, scale), seed = problem.draw(_problem(name))
    params, grads = _materialize(shapes, dtype, seed, scale)
    iterates = _check_properties(getattr(atx, name)(**kwargs), params, grads)
    _assert_matches_reference(name, kwargs, params, grads, iterates, TOL[dtype])


@pytest.mark.parametrize("name", NAMES)
@settings(PROPERTY, max_examples=max(1, EXAMPLES // 2))
@given(problem=st.data())
def test_float64_under_x64_matches_the_float64_reference(name, problem):
    shapes, (kwargs, scale), seed = problem.draw(_problem(name))
    with jax.enable_x64(True):
        params, grads = _materialize(shapes, np.float64, seed, scale)
        iterates = _check_properties(getattr(atx, name)(**kwargs), params, grads)
        _assert_matches_reference(name, kwargs, params, grads, iterates, TOL[jnp.float64])


@pytest.mark.parametrize("name", NAMES)
@settings(PROPERTY, max_examples=max(1, EXAMPLES // 2))
@given(problem=st.data())
def test_complex_parameters_match_optax(name, problem):
    shapes, (kwargs, scale), seed = problem.draw(_problem(name))
    params, grads = _materialize(shapes, np.complex64, seed, scale)
    ours = _check_properties(getattr(atx, name)(**kwargs), params, grads)
    theirs, _, _ = run(twin(name)(**kwargs), params, grads)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        a, b = np.asarray(a, np.complex128), np.asarray(b, np.complex128)
        assert np.all(np.abs(a - b) <= 1e-5 * np.maximum(np.abs(b), 1.0))


@pytest.mark.xfail(
    strict=True,
    reason="scale_by_learning_rate keeps the rate as float32 (learning_rate.py), so float64 "
    "parameters move by a rate rounded to float32: ~1e-8 relative off the float64 reference, "
    "where optax is exact. Remove this mark when the rate keeps the parameters' precision.",
)
def test_float64_learning_rate_is_not_rounded_to_float32():
    rng = np.random.default_rng(0)
    params, grads = rng.normal(size=5), [rng.normal(size=5) for _ in range(STEPS)]
    with jax.enable_x64(True):
        iterates, _, _ = run(atx.adam(0.03), jnp.asarray(params), [jnp.asarray(g) for g in grads])
    expected = _reference("adam", {"learning_rate": 0.03}, (params, grads))
    assert np.max(np.abs(np.stack(iterates) - expected)) <= TOL[jnp.float64]


# --- The properties optax's own suite checks of every alias (alias_test.py, transform_test.py) ---

PARABOLA_START, PARABOLA_END = [-1.0, 10.0, 1.0], [1.0, -1.0, 1.0]


def _objective(params):
    """optax's test problems, one leaf each: a parabola and Rosenbrock (a=1, b=100), in float32
    and complex64. Each leaf is its own problem (every alias is per-leaf)."""
    total = 0.0
    for suffix in ("f32", "c64"):
        if "parabola_" + suffix not in params:
            continue
        p, r = params["parabola_" + suffix], params["rosenbrock_" + suffix]
        total += jnp.sum(abs_sq(p - jnp.asarray(PARABOLA_END, p.dtype)))
        total += abs_sq(1.0 - r[0]) + 100.0 * abs_sq(r[1] - r[0] ** 2)
    return total


def abs_sq(x):
    return jnp.real(x * jnp.conj(x))


def _problems(real_only=False):
    params = {}
    dtypes = (("f32", jnp.float32),) + ((("c64", jnp.complex64),) if not real_only else ())
    for suffix, dtype in dtypes:
        params["parabola_" + suffix] = jnp.asarray(PARABOLA_START, dtype)
        params["rosenbrock_" + suffix] = jnp.zeros(2, dtype)
    return params




# optax's test_optimization skips complex64 for these (adadelta and rprop refuse complex numbers,
# see tests/test_aliases.py; lion's fixed-size steps are not claimed to solve the complex problems).
REAL_ONLY_CONVERGENCE = ("adadelta", "lion", "rprop")


def _converging(name, kwargs):
    """The row at its convergence rate, without weight decay (which moves the minimum; lion's
    default 1e-3 is replaced by optax's test setting, 1e-4)."""
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("weight_decay")}
    if name == "lion":
        kwargs["weight_decay"] = 1e-4
    return name, {**kwargs, "learning_rate": CONVERGENCE_LR[name]}


CONVERGENCE_ROWS = [_converging(*row) for row in DEFAULTS + FACTORED]


@pytest.mark.parametrize("row", CONVERGENCE_ROWS, ids=case_id)
def test_converges_on_a_parabola_and_rosenbrock_in_float32_and_complex64(row):
    """optax's test_optimization: 10000 steps (one jitted loop) end within 3e-2 of the minimum.
    Each step passes an extra keyword argument through the chain (`value=`), as optax's
    GradientTransformationExtraArgs allow; complex gradients are conjugated as optax's test does."""
    name, kwargs = row
    tx = getattr(atx, name)(**kwargs)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)

    def step(_, carry):
        params, state = carry
        value, grads = jax.value_and_grad(_objective)(params)
        grads = jax.tree.map(jnp.conj, grads)
        updates, state = tx.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    # ADOPT clips its normalized gradient, which complex numbers cannot be (refused with the fix,
    # tests/test_aliases.py; unclipped, its eps-floored first steps diverge on Rosenbrock)
    params = _problems(real_only=name == "adopt")
    if name in REAL_ONLY_CONVERGENCE:
        params = {k: v for k, v in params.items() if k.endswith("f32")}
    params, _ = jax.jit(lambda p: jax.lax.fori_loop(0, 10_000, step, (p, tx.init(p))))(params)
    expected = {
        k: jnp.asarray(PARABOLA_END if k.startswith("parabola") else [1.0, 1.0], v.dtype)
        for k, v in params.items()
    }
    chex.assert_trees_all_close(params, expected, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("row", ALIASES + FACTORED, ids=case_id)
def test_state_shapes_and_dtypes_are_the_same_after_init_and_update(row):
    """optax's transform tests: jax.eval_shape of init and of update's state agree (so that a
    jitted loop's carry keeps its type), for float32 and bfloat16 parameters."""
    name, kwargs = row
    tx = getattr(atx, name)(**kwargs)
    for dtype in (jnp.float32, jnp.bfloat16):
        params = jax.tree.map(lambda p: jnp.asarray(p, dtype), make_params())
        state = jax.eval_shape(tx.init, params)
        _, new_state = jax.eval_shape(tx.update, params, state, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize(
    "row",
    [r for r in DEFAULTS if "mu_dtype" in inspect.signature(twin(r[0])).parameters],
    ids=case_id,
)
def test_explicit_mu_dtype_is_kept_as_optax_keeps_it(row, dtype):
    """optax's test_explicit_dtype: with mu_dtype the first moment has that dtype after init and
    after update, as in optax's state, and the update has optax's dtype."""
    name, kwargs = row
    params = make_params()
    dtypes = []
    # the first moment's name in each state: AdEMAMix's fast moment, LaProp's optax.ema
    names = {"ademamix": ("m1", "m1"), "laprop": ("mu", "ema")}.get(name, ("mu", "mu"))
    for factory, key in zip((getattr(atx, name), twin(name)), names):
        tx = factory(**kwargs, mu_dtype=dtype)
        state = jax.eval_shape(tx.init, params)
        updates, new_state = jax.eval_shape(tx.update, params, state, params)
        dtypes.append(
            (
                jax.tree.map(lambda x: x.dtype, optax.tree.get(state, key)),
                jax.tree.map(lambda x: x.dtype, optax.tree.get(new_state, key)),
                jax.tree.map(lambda x: x.dtype, updates),
            )
        )
    if name == "ademamix":  # optax's update promotes m1 to float32 (it casts nothing back)
        assert dtypes[0][1] == dtypes[0][0]  # ours keeps mu_dtype: a jitted loop's carry is stable
        dtypes = [d[::2] for d in dtypes]
    assert dtypes[0] == dtypes[1]
    assert all(d == dtype for d in jax.tree.leaves(dtypes[0][0]))


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_multi_steps_equals_one_step_on_the_mean_gradient(row):
    """optax.MultiSteps accumulating k dense gradients takes the step the alias takes on their
    mean (optax's transform test of gradient accumulation)."""
    name, kwargs = row
    k, params, grads = 3, make_params(), gradient_stream(6)
    tx = getattr(atx, name)(**kwargs)
    multi = optax.MultiSteps(tx, every_k_schedule=k)

    @jax.jit
    def both(params, grads):
        p_multi, s_multi, p_plain, s_plain = params, multi.init(params), params, tx.init(params)
        for i, g in enumerate(grads):
            updates, s_multi = multi.update(g, s_multi, p_multi)
            p_multi = optax.apply_updates(p_multi, updates)
            if (i + 1) % k == 0:
                mean = jax.tree.map(lambda *gs: sum(gs) / k, *grads[i + 1 - k : i + 1])
                updates, s_plain = tx.update(mean, s_plain, p_plain)
                p_plain = optax.apply_updates(p_plain, updates)
        return p_multi, p_plain

    p_multi, p_plain = both(params, grads)
    assert max_rel_diff(p_plain, params) > 1e-3
    assert max_rel_diff(p_multi, p_plain) <= 1e-5
