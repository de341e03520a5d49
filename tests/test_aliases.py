"""Every alias against its optax twin, and the properties every method must have."""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import adaptive_tx as atx
from tests.cases import (
    ALIASES,
    COMPOSED_TWINS,
    DEFAULTS,
    FACTORED,
    PARITY_FLOOR,
    STORAGE_OPTIONS,
    case_id,
    gradient_stream,
    make_params,
    max_rel_diff,
    row_stepper,
    run,
    twin,
)

NAMES = sorted({name for name, _ in ALIASES})


def final(tx, params, grads):
    """The parameters after the whole stream, the final state and the number of traces."""
    iterates, state, traces = run(tx, params, grads)
    return iterates[-1], state, traces




def _comparable(default):
    """A default as the signature test compares it: a function default (ADOPT's clip_value_fn)
    by its values at a few step counts, since two equal lambdas are different objects."""
    if not callable(default) or default is inspect.Parameter.empty:
        return default
    return tuple(float(default(jnp.int32(count))) for count in (0, 1, 7, 10_000))


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_optax(name):
    """optax's parameters exactly (names, defaults, order, kinds), then only keyword-only storage
    options defaulting to None."""
    ours, theirs = inspect.signature(getattr(atx, name)), inspect.signature(twin(name))
    ours = [(p.name, _comparable(p.default), p.kind) for p in ours.parameters.values()]
    theirs = [(p.name, _comparable(p.default), p.kind) for p in theirs.parameters.values()]
    assert ours[: len(theirs)] == theirs
    extras = ours[len(theirs) :]
    assert {n for n, _, _ in extras} <= set(STORAGE_OPTIONS) - {n for n, _, _ in theirs}
    assert all(d is None and k == inspect.Parameter.KEYWORD_ONLY for _, d, k in extras)


@pytest.mark.parametrize("row", ALIASES, ids=case_id)
def test_matches_optax_over_100_steps(row):
    """Every iterate within 1e-5 of optax's relative to max(|θ|, 1) (measured: at most 5.4e-7,
    a few float32 ulps of parameters near 1), and the final one within 1e-5 relative to
    max(|θ|, 1e-3) (measured: at most 4.4e-6)."""
    name, kwargs = row
    params, grads = make_params(), gradient_stream(100)
    our_iterates, our_state, traces = run(row_stepper(row), params, grads)
    their_iterates, their_state, _ = run(twin(name)(**kwargs), params, grads)
    ours, theirs = our_iterates[-1], their_iterates[-1]
    assert traces == 1, "the jitted step recompiled across steps"
    assert_tree_get_agrees(our_state, their_state, name)
    assert max_rel_diff(ours, params) > 1e-2, "the parameters did not move"
    assert max_rel_diff(our_iterates, their_iterates, 1.0) <= 1e-5
    assert max_rel_diff(ours, theirs, PARITY_FLOOR.get(name, 1e-3)) <= 1e-5
    # the first statistic tree (a schedule-free state's is z, after the base optimizer's state)
    first = our_state.z if isinstance(our_state, atx.ScheduleFreeState) else our_state[0][1]
    chex.assert_trees_all_equal_shapes(first, params)


def _numeric_defaults(factory) -> dict:
    """Every hyperparameter of `factory` with a numeric default: what inject_hyperparams injects
    when it is passed."""
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)
    }


# Function arguments that are not schedules: inject_hyperparams would call them with its step
# count and pass the value on, so they are declared static (optax's twin needs it as well).
STATIC_ARGS = {"adopt": ("clip_value_fn",)}


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_inject_hyperparams_equals_plain(row):
    """Every numeric hyperparameter passed, so injected as an array (optax's test: all
    hyperparameters injectable): the same updates as optax's twin injected the same way, and the
    plain alias's within float32 rounding."""
    name, kwargs = row
    kwargs = {**_numeric_defaults(twin(name)), **kwargs}
    params, grads = make_params(), gradient_stream(10)
    static = STATIC_ARGS.get(name, ())
    ours, state, traces = final(
        optax.inject_hyperparams(getattr(atx, name), static_args=static)(**kwargs), params, grads
    )
    theirs, their_state, _ = final(
        optax.inject_hyperparams(twin(name), static_args=static)(**kwargs), params, grads
    )
    assert_tree_get_agrees(state, their_state, name, inject=True)
    plain, _, _ = final(row_stepper(row), params, grads)  # the same alias, defaults implicit
    assert traces == 1
    assert max_rel_diff(ours, theirs) <= 1e-5
    # Injected hyperparameters are float32 arrays (python floats are rounded later): ~1e-7 per op.
    assert max_rel_diff(ours, plain) <= 1e-4
    assert state.hyperparams["learning_rate"] == np.float32(kwargs["learning_rate"])
    assert set(kwargs) <= set(state.hyperparams)


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_inside_optax_chain_with_clipping(row):
    name, kwargs = row
    params, grads = make_params(), gradient_stream(20)
    ours, _, _ = final(
        optax.chain(optax.clip_by_global_norm(1.0), getattr(atx, name)(**kwargs)), params, grads
    )
    theirs, _, _ = final(
        optax.chain(optax.clip_by_global_norm(1.0), twin(name)(**kwargs)), params, grads
    )
    assert max_rel_diff(ours, theirs) <= 1e-5


def test_inside_multi_transform():
    params, grads = make_params(), gradient_stream(20)
    labels = {"w": "adam", "b": "rmsprop", "emb": "adagrad"}

    def split(lib):
        return optax.multi_transform(
            {
                "adam": lib.adamw(0.01, weight_decay=0.1),
                "rmsprop": lib.rmsprop(0.01),
                "adagrad": lib.adagrad(0.1),
            },
            labels,
        )

    ours, _, traces = final(split(atx), params, grads)
    theirs, _, _ = final(split(optax), params, grads)
    assert traces == 1
    assert max_rel_diff(ours, theirs) <= 1e-5


class _MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)
        self.counter = nnx.BatchStat(jnp.zeros(()))  # not a Param: the optimizer must skip it

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def _train_nnx(tx, steps=5):
    model = _MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (32, 8))
    y = jax.random.randint(jax.random.key(2), (32,), 0, 3)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(steps)]
    return losses, nnx.state(model, nnx.Param)


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_flax_nnx_optimizer(row):
    name, kwargs = row
    losses, ours = _train_nnx(getattr(atx, name)(**kwargs))
    _, theirs = _train_nnx(twin(name)(**kwargs))
    assert losses[-1] < losses[0]
    assert max_rel_diff(ours, theirs) <= 1e-5


def _field_names(state) -> set:
    """Every NamedTuple field name and dict key in a state."""
    names, stack = set(), [state]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            names.update(node._fields)
            stack.extend(node)
        elif isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, dict):
            names.update(k for k in node if isinstance(k, str))
            stack.extend(node.values())
    return names


def _is_state(value) -> bool:
    return isinstance(value, tuple)  # a state or a chain's tuple of states


def _tree_get(state, key):
    try:
        return optax.tree.get(state, key)
    except KeyError:
        return KeyError


# optax's step counts under other names (optax.adan's ``t``; optax.contrib.ademamix's second
# counter, always equal to its ``count``): ours is ``count``, the same number.
STEP_COUNT_NAMES = ("t", "count_m2")


def assert_tree_get_agrees(ours, theirs, name, inject=False):
    """optax.tree.get on our state finds, for every name in optax's state, what it finds there:
    the same value after the same steps. Where optax's has several values of a name, ours has
    several too, or one equal to each. (Names only ours has are extra, e.g. the adaptive state's
    ``count`` where optax's adagrad keeps none.)"""
    if name in COMPOSED_TWINS:
        return  # no optax state of that name to be equivalent to
    for key in sorted(_field_names(theirs) | {"count", "learning_rate"}):
        expected, got = _tree_get(theirs, key), _tree_get(ours, key)
        if got is None and key in STEP_COUNT_NAMES:
            for _, value in optax.tree.get_all_with_path(ours, "count"):
                np.testing.assert_array_equal(value, expected)
            continue
        if expected is None or _is_state(expected):
            continue  # not in optax's state, or a sub-state (whose types differ by design)
        counts = ("adagrad", "rmsprop", "adan", "adadelta", "rprop", "sm3")
        special = inject and key == "count" and name in counts
        if special and got is KeyError and expected is not KeyError:
            # optax's adagrad, rmsprop, adadelta and rprop states keep no step count (adan's is
            # its ``t``), so under injection optax finds the injector's alone; ours also has the
            # adaptive state's (the same number).
            np.testing.assert_array_equal(
                [v for _, v in optax.tree.get_all_with_path(ours, key)], expected
            )
            continue
        if expected is KeyError:
            # optax's state has several values (e.g. two step counts): ours has the same several,
            # or one that equals each of them.
            expected = [v for _, v in optax.tree.get_all_with_path(theirs, key)]
            if got is KeyError or any(_is_state(v) for v in expected):
                continue
            for value in expected:
                chex.assert_trees_all_close(got, value, rtol=1e-5, atol=1e-6)
        else:
            assert got is not KeyError, f"optax.tree.get(state, {key!r}) raises on ours"
            if isinstance(got, atx.CoverArray):  # SM3's per-axis maxima (optax: a list per leaf)
                got = jax.tree.map(lambda *axes: atx.CoverArray(*axes).vectors(), *got)
            chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)


# (one integer dtype: every integer gradient takes the same path, a cast to the dtype it promotes
# to with the parameter's)
GRAD_DTYPES = ["int32", "bool", "bfloat16", "float16", "float32", "complex64"]
PARAM_DTYPES = ["bfloat16", "float16", "float32", "complex64"]
# max |ours - reference| / max(|reference|, 1e-3) for an update of this dtype.
# Aliases whose optax twin is not defined on complex numbers (optax squares a complex gradient,
# g ** 2, into a complex statistic, and its own tests skip complex for them): refused here.
REAL_ONLY = ("adadelta", "rprop")
UPDATE_TOL = {"bfloat16": 2e-2, "float16": 2e-3, "float32": 1e-5, "complex64": 1e-5}


def _dtype_grid(steps=2, real_only=False):
    """One tree with a leaf per (gradient dtype, parameter dtype), complex on real left out."""
    values = np.array([3, -2, 5, 0])
    params, grads = {}, [{} for _ in range(steps)]
    for p_dtype in ("bfloat16", "float32") if real_only else PARAM_DTYPES:
        for g_dtype in GRAD_DTYPES:
            if g_dtype == "complex64" and p_dtype != "complex64":
                continue
            key = f"{g_dtype}_on_{p_dtype}"
            params[key] = jnp.asarray([1.0, -2.0, 0.5, 1.5], p_dtype)
            for t in range(steps):
                g = values * (t + 1) if g_dtype != "bool" else (values > 0) ^ bool(t)
                grads[t][key] = jnp.asarray(g).astype(g_dtype)
    return params, grads


def _wide(dtype):
    return jnp.complex64 if jnp.issubdtype(dtype, jnp.complexfloating) else jnp.float32


@pytest.mark.parametrize("row", DEFAULTS + FACTORED[:1], ids=case_id)
def test_update_dtype_is_optax_for_every_gradient_and_parameter_dtype(row):
    """An integer or boolean gradient is used as the numbers it holds (True is 1) and gives a
    float update; every update has optax's dtype: that of its computation on a state shaped like
    the parameters, the gradient's dtype promoted with the parameter's (optax is run on the
    gradient cast to that dtype: on the raw integer gradient its nadam gives inf, and a boolean
    gradient on float16 parameters NaN). The values equal optax's float32 computation within the
    precision of the parameter and update dtypes, and are finite; the state keeps its dtypes (a
    gradient of the parameter's own dtype, bfloat16 on bfloat16 included, keeps that dtype)."""
    name, kwargs = row
    # adafactor: complex parameters are tests/test_factored.py's; its float16 means underflow
    # eps = 1e-30 to 0, so a zero gradient coordinate gives 0 * inf (as optax's float16 state)
    # adopt: clipping refuses complex gradients; adadelta, rprop refuse complex numbers
    # (test_complex_gradient_on_real_parameters_is_refused)
    # sm3: optax refuses complex parameters (ours: tests/test_properties.py's complex parabola)
    params, grads = _dtype_grid(real_only=name in ("adafactor", "adopt", "sm3", *REAL_ONLY))
    ours, theirs = getattr(atx, name)(**kwargs), twin(name)(**kwargs)
    dtypes = {k: jnp.result_type(grads[0][k].dtype, p.dtype) for k, p in params.items()}
    wide_params = {k: p.astype(_wide(p.dtype)) for k, p in params.items()}
    s1, s2 = ours.init(params), theirs.init(wide_params)
    our_update, their_update = jax.jit(ours.update), jax.jit(theirs.update)
    cast = {k: v.astype(dtypes[k]) for k, v in grads[0].items()}
    # novograd: optax's lax.cond branches differ in dtype unless g's is p's; schedule_free:
    # optax.contrib's init takes the lowest parameter dtype, which bfloat16 and float16 lack
    if name in ("novograd", "schedule_free_adamw"):
        u3 = {k: jax.ShapeDtypeStruct((), d) for k, d in dtypes.items()}
    else:
        u3, _ = jax.eval_shape(theirs.update, cast, theirs.init(params), params)
    for g in grads:
        u1, new_s1 = our_update(g, s1, params)
        wide_g = {k: v.astype(_wide(dtypes[k])) for k, v in g.items()}
        u2, s2 = their_update(wide_g, s2, wide_params)
        chex.assert_trees_all_equal_shapes_and_dtypes(new_s1, s1)
        s1 = new_s1
        for key, dtype in dtypes.items():
            assert u1[key].dtype == dtype == u3[key].dtype, (key, u1[key].dtype, u3[key].dtype)
            tol = max(UPDATE_TOL[str(dtype)], UPDATE_TOL[str(params[key].dtype)])
            if name == "adadelta" and params[key].dtype == jnp.float16:
                # E[dx^2] starts near (1 - rho) * eps = 1e-7, subnormal in float16 (spacing 6e-8):
                # a float16 state holds it to a few %, which moves the next step by ~4e-3 (optax's
                # float16 state alike; scale_by_adadelta's docstring advises nu_dtype=float32).
                tol = 1e-2
            err = max_rel_diff(u1[key], u2[key])
            p_dtype = params[key].dtype
            if name == "schedule_free_adamw" and p_dtype in (jnp.bfloat16, jnp.float16):
                # z is kept in the parameters' dtype (optax's state_dtype=None): a step of 0.01 on
                # z ~ 1 rounds to the dtype's spacing there, so the next update is off by up to
                # half of it, 9% of it in bfloat16 (optax's own bfloat16 run: 7.8x off;
                # state_dtype=float32: 2.6e-3): bounded in absolute terms
                err = np.max(np.abs(np.subtract(u1[key], u2[key], dtype=np.float64)))
                tol = 0.5 * float(jnp.finfo(p_dtype).eps) * float(np.max(np.abs(params[key])))
            assert err <= tol, (key, err)
            assert bool(jnp.all(jnp.isfinite(u1[key]))), key  # (NaN against NaN is no difference)


@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_complex_gradient_on_real_parameters_is_refused(row):
    """A complex gradient on a real parameter: where optax's state would turn complex (a first
    moment), the real statistic would lose its imaginary part, so it is refused; where the
    statistics stay real (|g|^2: adagrad, rmsprop), the update is optax's (complex)."""
    name, kwargs = row
    tx, theirs = getattr(atx, name)(**kwargs), twin(name)(**kwargs)
    params, g = {"w": jnp.ones(3)}, {"w": jnp.full(3, 1 + 2j, jnp.complex64)}
    if name in REAL_ONLY:  # refused on complex parameters and on complex gradients
        with pytest.raises(TypeError, match=r"gradient \['w'\] is complex \(complex64\)"):
            tx.update(g, tx.init(params), params)
        complex_params = {"w": jnp.ones(3, jnp.complex64)}
        with pytest.raises(TypeError, match=r"parameter \['w'\] is complex \(complex64\)"):
            tx.init(complex_params)
        return
    if name == "adopt":  # clipping orders values (optax's fails in jnp.clip): refused, with the fix
        for p in (params, {"w": jnp.ones(3, jnp.complex64)}):
            with pytest.raises(TypeError, match="use_clipping=False for complex parameters"):
                tx.update(g, tx.init(p), p)
        kwargs = {**kwargs, "use_clipping": False}
        tx, theirs = getattr(atx, name)(**kwargs), twin(name)(**kwargs)
    their_state = theirs.init(params)
    their_updates, new_state = theirs.update(g, their_state, params)
    turns_complex = any(
        jnp.iscomplexobj(new) and not jnp.iscomplexobj(old)
        for old, new in zip(jax.tree.leaves(their_state), jax.tree.leaves(new_state))
    )
    # schedule-free's z, z + u, is complex: optax.contrib casts it back to the real parameters'
    # dtype (the imaginary part dropped, a real update); ours refuses it
    turns_complex = turns_complex or name == "schedule_free_adamw"
    if turns_complex:
        with pytest.raises(TypeError, match="complex gradients to complex parameters"):
            tx.update(g, tx.init(params), params)
    else:
        updates, _ = tx.update(g, tx.init(params), params)
        assert updates["w"].dtype == their_updates["w"].dtype == jnp.complex64
        assert max_rel_diff(updates, their_updates) <= 1e-6
    options = inspect.signature(getattr(atx, name)).parameters
    # the Adam family: a first moment of g (rmsprop's mu_dtype is its momentum's, of g / rms)
    if name != "rmsprop" and "mu_dtype" in options and "nu_dtype" in options:
        # complex parameters with a real first moment are refused too; a real nu_dtype is fine
        # (the second moment is real)
        complex_params = {"w": jnp.ones(3, jnp.complex64)}
        for option, refused in (("mu_dtype", True), ("nu_dtype", False)):
            tx = getattr(atx, name)(**kwargs, **{option: jnp.float32})
            if refused:
                with pytest.raises(TypeError, match="complex gradients to complex parameters"):
                    tx.update(g, tx.init(complex_params), complex_params)
            else:  # (two steps: ADOPT's first update is 0)
                state = tx.init(complex_params)
                for _ in range(2):
                    updates, state = tx.update(g, state, complex_params)
                assert jnp.all(jnp.imag(updates["w"]) != 0)

def _presets():
    from adaptive_tx.compat import keras as compat_keras
    from adaptive_tx.compat import torch as compat_torch

    # (SparseAdam refuses dense gradients: tests/test_compat_torch.py)
    rows = [
        (f"torch.{n}", getattr(compat_torch, n), dict(lr=0.01))
        for n in compat_torch.__all__
        if n != "SparseAdam"
    ]
    rows += [
        (f"keras.{n}", getattr(compat_keras, n), dict(learning_rate=0.01))
        for n in compat_keras.__all__
        if n[0].isupper()
    ]
    return rows


@pytest.mark.parametrize("preset", _presets(), ids=lambda row: row[0])
def test_preset_update_dtype_for_every_real_gradient_and_parameter_dtype(preset):
    """The presets give the aliases' update dtypes (the gradient's promoted with the parameter's)
    for every real gradient and parameter dtype (they refuse complex parameters), and an integer or
    boolean gradient moves the parameters as the same numbers in float32 do (whose parity with
    torch and keras their own tests pin), within the precision of the narrower dtype. (A smaller
    grid than the aliases': integer, boolean and bfloat16 gradients on bfloat16 and float32.)"""
    name, factory, kwargs = preset
    tx = factory(**kwargs)
    params, (grads, _) = _dtype_grid()
    kept = [f"{g}_on_{p}" for g in ("int32", "bool", "bfloat16") for p in ("bfloat16", "float32")]
    params = {k: v for k, v in params.items() if k in kept}
    grads = {k: v for k, v in grads.items() if k in params}
    wide = {k: v.astype(jnp.float32) for k, v in params.items()}
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    expected, _ = jax.jit(tx.update)(
        {k: v.astype(jnp.float32) for k, v in grads.items()}, tx.init(wide), wide
    )
    chex.assert_trees_all_equal_shapes_and_dtypes(state, tx.init(params))
    for key, p in params.items():
        dtype = jnp.result_type(grads[key].dtype, p.dtype)
        assert updates[key].dtype == dtype, (key, updates[key].dtype, dtype)
        tol = max(UPDATE_TOL[str(dtype)], UPDATE_TOL[str(p.dtype)])
        assert max_rel_diff(updates[key], expected[key]) <= tol, key
