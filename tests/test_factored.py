"""Factored (Adafactor) and per-block (Adam-mini) second moments: storages of the same rules.

Adafactor against optax.adafactor over a grid of its keyword settings; Adam with a factored or a
per-block second moment against float64 NumPy references written from the papers
(tests/reference/numpy_lean_state.py).
"""

from __future__ import annotations

import inspect
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests.cases import SCHEDULE, max_rel_diff, run
from tests.reference import numpy_lean_state as ref

STEPS = 100


def _params(seed=0):
    """A factored matrix (dims >= 128), a factored 3-d kernel, a vector and a small table."""
    rng = np.random.default_rng(seed)
    shapes = {"w": (130, 160), "k": (2, 140, 130), "b": (160,), "emb": (10, 3)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def _grads(steps=STEPS, seed=1):
    """Gradients with rows of zeros (rarely touched embedding rows) and a x100 change half way."""
    rng = np.random.default_rng(seed)
    stream = []
    for t in range(steps):
        scale = 100.0 if t >= steps // 2 else 1.0
        g = {k: scale * rng.normal(size=p.shape) for k, p in _params().items()}
        g["emb"] *= (rng.random(10) < 0.3)[:, None]
        g["w"][:5] *= 0.01  # rows of very different scale: the factoring has work to do
        stream.append({k: v.astype(np.float32) for k, v in g.items()})
    return stream


def _gap(ours, theirs, start):
    """max |ours - theirs| over how far the parameters moved, per leaf, worst leaf."""
    return max(
        float(np.max(np.abs(o - t)) / np.max(np.abs(t - s)))
        for o, t, s in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), jax.tree.leaves(start))
    )


def _mask(params):
    return {name: name != "b" for name in params}


ADAFACTOR_GRID = [
    dict(learning_rate=0.01),
    dict(learning_rate=0.01, min_dim_size_to_factor=3),  # the small table is factored too
    dict(learning_rate=SCHEDULE, decay_rate=0.5, eps=1e-3, clipping_threshold=2.0),
    dict(learning_rate=0.01, multiply_by_parameter_scale=False, clipping_threshold=None),
    dict(learning_rate=0.01, momentum=0.9, weight_decay_rate=0.01, weight_decay_mask=_mask),
    dict(learning_rate=0.01, momentum=0.5, dtype_momentum=jnp.bfloat16, weight_decay_rate=1e-3),
    dict(learning_rate=0.01, factored=False),
    dict(learning_rate=None, multiply_by_parameter_scale=False, decay_rate=0.9),
]


def _case_id(kwargs):
    return ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items())


def test_signature_matches_optax():
    ours, theirs = inspect.signature(atx.adafactor), inspect.signature(optax.adafactor)
    assert [(p.name, p.default, p.kind) for p in ours.parameters.values()] == [
        (p.name, p.default, p.kind) for p in theirs.parameters.values()
    ]


@pytest.mark.parametrize("kwargs", ADAFACTOR_GRID, ids=_case_id)
def test_adafactor_matches_optax_over_100_steps(kwargs):
    params, grads = _params(), _grads()
    ours, state, traces = run(atx.adafactor(**kwargs), params, grads)
    theirs, _, _ = run(optax.adafactor(**kwargs), params, grads)
    assert traces == 1
    assert max_rel_diff(ours[-1], params) > 1e-2, "the parameters did not move"
    # A bfloat16 momentum turns float32 rounding differences (~1e-7) into an occasional flip of a
    # bf16 rounding (4e-3 of one coordinate's momentum).
    tolerance = 1e-3 if kwargs.get("dtype_momentum") == jnp.bfloat16 else 1e-5
    assert _gap(ours[-1], theirs[-1], params) <= tolerance
    nu = state[0].nu  # a FactoredArray of params-shaped trees of row and column means
    if kwargs.get("factored", True):  # rows average the largest axis away, columns the other
        assert nu.row["w"].shape == (130, 1) and nu.col["w"].shape == (1, 160)
        assert nu.row["k"].shape == (2, 1, 130) and nu.col["k"].shape == (2, 140, 1)
    else:  # kept whole: the statistic in `row`, a (1,) placeholder in `col` (as optax)
        assert nu.row["w"].shape == (130, 160) and nu.col["w"].shape == (1,)


def test_decay_offset_matches_optax_when_fine_tuning_from_that_step():
    """The schedule restarts at ``decay_offset``: a fine-tuning run resumed at that step."""
    params, grads = _params(), _grads(30)
    kwargs = dict(learning_rate=0.01, decay_offset=40)

    def resumed(tx):
        state = tx.init(params)
        return (state[0]._replace(count=jnp.int32(40)),) + tuple(state[1:])

    finals = []
    for tx in (atx.adafactor(**kwargs), optax.adafactor(**kwargs)):
        step = jax.jit(lambda p, s, g, tx=tx: _apply(tx, p, s, g))
        p, s = params, resumed(tx)
        for g in grads:
            p, s = step(p, s, g)
        finals.append(p)
    assert _gap(finals[0], finals[1], params) <= 1e-5


def _apply(tx, params, state, g):
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state


def test_scale_by_factored_ema_of_squares_matches_optax_and_its_scale_is_the_step():
    params, grads = _params(), _grads(20)
    ours, theirs = atx.scale_by_factored_ema_of_squares(), optax.scale_by_factored_rms()
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    for g in grads:
        u_ours, s_ours = jax.jit(ours.update)(g, s_ours)
        u_theirs, s_theirs = jax.jit(theirs.update)(g, s_theirs, params)
        assert max_rel_diff(u_ours, u_theirs, floor=1e-2) <= 1e-5
    # the effective scale read from the state is the last step's factor: update = g * scale
    scale = s_ours.per_coordinate_scale()
    chex.assert_trees_all_equal_shapes(scale, params)
    assert max_rel_diff(jax.tree.map(jnp.multiply, grads[-1], scale), u_ours, floor=1e-2) <= 1e-6


def test_a_matrix_without_gradients_yet_takes_a_zero_step_as_in_optax():
    """v = eps1 = 1e-30 everywhere: R C = 1e-60 underflows in float32, R / mean(R) does not."""
    params = zeros = {"w": jnp.zeros((4, 6))}
    ours = atx.scale_by_factored_ema_of_squares(min_dim_size_to_factor=2)
    theirs = optax.scale_by_factored_rms(min_dim_size_to_factor=2)
    updates, _ = jax.jit(ours.update)(zeros, ours.init(params))
    expected, _ = theirs.update(zeros, theirs.init(params), params)
    np.testing.assert_array_equal(updates["w"], expected["w"])
    np.testing.assert_array_equal(updates["w"], np.zeros((4, 6)))


def test_inject_hyperparams_with_static_shapes_settings():
    params, grads = _params(), _grads(10)
    static = ("min_dim_size_to_factor", "decay_offset")
    ours, _, traces = run(
        optax.inject_hyperparams(atx.adafactor, static_args=static)(learning_rate=0.01),
        params,
        grads,
    )
    plain, _, _ = run(atx.adafactor(learning_rate=0.01), params, grads)
    assert traces == 1 and _gap(ours[-1], plain[-1], params) <= 1e-5


# --- the options for keras' and torch's conventions, against the float64 reference ------------

# (scale_by_factored_ema_of_squares keywords, which the reference takes too; the keywords that
# give optax's convention instead of the row's, None for optax's own row)
FACTORED_OPTION_ROWS = [
    (dict(min_dim_size_to_factor=2), None),  # optax's axes: 0 and 2 of the stack
    (dict(min_dim_size_to_factor=0, last_two_axes=True), dict(last_two_axes=False)),  # keras
    (dict(min_dim_size_to_factor=2, decay_rate=0.0, epsilon=1e-3), dict(decay_rate=0.8)),
]


def _option_problem():
    """A (5, 2, 3) stack, a (4, 5) matrix and a vector; one row of the matrix and one matrix of the
    stack 1e-3 times smaller (their v is below the floor), exact zeros, x100 half way."""
    rng = np.random.default_rng(7)
    shapes = {"stack": (5, 2, 3), "w": (4, 5), "b": (3,)}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = []
    for t in range(STEPS):
        g = {k: rng.normal(size=s) * (100.0 if t >= STEPS // 2 else 1.0) for k, s in shapes.items()}
        g["w"][1] *= 1e-3
        g["stack"][2] *= 1e-3
        g["w"][:, 4] = 0.0
        g["b"] *= t % 3 != 0
        grads.append({k: v.astype(np.float32) for k, v in g.items()})
    return params, grads


def _reference_run(params, grads, lr, **kwargs):
    return {
        k: ref.run_factored_rms(params[k], [g[k] for g in grads], lr, **kwargs)[-1] for k in params
    }


@pytest.mark.parametrize(
    "kwargs,optax_kwargs", FACTORED_OPTION_ROWS, ids=[_case_id(r[0]) for r in FACTORED_OPTION_ROWS]
)
def test_factored_options_match_float64_reference(kwargs, optax_kwargs):
    params, grads = _option_problem()
    tx = optax.chain(atx.scale_by_factored_ema_of_squares(**kwargs), optax.scale(-1e-2))
    ours, _, _ = run(tx, params, grads)
    expected = _reference_run(params, grads, 1e-2, **kwargs)
    assert max_rel_diff(ours[-1], expected, floor=1.0) <= 1e-5
    if optax_kwargs is not None:  # the option matters here: optax's value moves the reference
        without = _reference_run(params, grads, 1e-2, **(kwargs | optax_kwargs))
        assert max_rel_diff(without, expected, floor=1.0) > 1e-3


# --- the same storages under Adam: factored v, and Adam-mini's one v per block ---------------


# Dyadic decay rates: exact in float32, so the float32 bias corrections 1 - b^t are those of the
# float64 reference (b2 = 0.999 rounds to float32 1.3e-5 away in 1 - b2).
B1, B2 = 0.75, 0.875


def _matrix_stream(shape=(24, 40), steps=STEPS):
    rng = np.random.default_rng(5)
    scales = np.exp(rng.normal(size=shape[0]))[:, None]  # rows of different scale
    return [(scales * rng.normal(size=shape)).astype(np.float32) for _ in range(steps)]


def test_adam_with_factored_second_moment_matches_float64_reference():
    grads = _matrix_stream()
    params = np.zeros(grads[0].shape, np.float32)
    tx = atx.adam(1e-2, B1, B2, nu_dtype=atx.Factored(min_dim_size_to_factor=2))
    ours, state, _ = run(tx, params, grads)
    expected = ref.run_adam_factored(params, grads, 1e-2, B1, B2)
    assert max_rel_diff(ours[-1], expected[-1], floor=1e-2) <= 1e-5
    assert state[0].nu.row.shape == (24, 1) and state[0].nu.col.shape == (1, 40)


@pytest.mark.parametrize("axes", [None, (0,), (1,), (0, 2)], ids=lambda a: f"axes={a}")
def test_adam_mini_matches_float64_reference(axes):
    rng = np.random.default_rng(6)
    shape = (6, 8, 5) if axes == (0, 2) else (24, 40)  # (in, heads, head_dim) for one v per head
    grads = [
        (np.exp(rng.normal(size=shape[-1])) * rng.normal(size=shape)).astype(np.float32)
        for _ in range(STEPS)
    ]
    params = np.zeros(shape, np.float32)
    ours, state, _ = run(atx.adam(1e-2, B1, B2, nu_dtype=atx.BlockMean(axes)), params, grads)
    reduced = tuple(range(len(shape))) if axes is None else axes
    expected = ref.run_adam_mini(params, grads, 1e-2, reduced, B1, B2)
    assert max_rel_diff(ours[-1], expected[-1], floor=1e-2) <= 1e-5
    kept = tuple(1 if i in reduced else n for i, n in enumerate(shape))
    assert state[0].nu.shape == kept and state[0].mu.shape == shape


def test_block_mean_ignores_axes_a_leaf_does_not_have():
    params = {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3), "scalar": jnp.zeros(())}
    state = atx.adam(1e-3, nu_dtype=atx.BlockMean(axes=(0,))).init(params)[0]
    assert jax.tree.map(jnp.shape, state.nu) == {"kernel": (1, 3), "bias": (1,), "scalar": ()}
    updates, _ = jax.jit(atx.adam(1e-3, nu_dtype=atx.BlockMean(axes=(0,))).update)(
        jax.tree.map(jnp.ones_like, params),
        atx.adam(1e-3, nu_dtype=atx.BlockMean(axes=(0,))).init(params),
    )
    chex.assert_trees_all_equal_shapes(updates, params)


# --- memory ----------------------------------------------------------------------------------


def test_factored_state_of_a_4096_matrix_is_under_one_percent_of_adams():
    params = {"w": jax.ShapeDtypeStruct((4096, 4096), jnp.float32)}
    adam = atx.state_nbytes(jax.eval_shape(optax.adam(1e-3).init, params))
    factored = atx.state_nbytes(jax.eval_shape(atx.adafactor(1e-3).init, params))
    assert factored <= 0.01 * adam
    assert factored < 2 * 4096 * 4 + 200  # two vectors of 4096 float32, plus counters


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(decay_rate=-0.8), "decay_rate"),
        (dict(step_offset=-1), "step_offset"),
        (dict(epsilon=-1e-30), "epsilon"),
        (dict(min_dim_size_to_factor=-1), "min_dim_size_to_factor"),
    ],
    ids=lambda v: str(v),
)
def test_invalid_hyperparameter_raises_naming_argument_and_value(kwargs, argument):
    with pytest.raises(ValueError, match=f"{argument}.*{kwargs[argument]!r}"):
        atx.scale_by_factored_ema_of_squares(**kwargs)


def test_gradient_of_another_shape_is_rejected_naming_the_leaf():
    tx = atx.adafactor(1e-2, min_dim_size_to_factor=2)
    state = tx.init({"w": jnp.zeros((4, 6))})
    with pytest.raises(ValueError, match=r"\['w'\] has shape \(6, 4\).*shape \(4, 6\)"):
        tx.update({"w": jnp.zeros((6, 4))}, state, {"w": jnp.zeros((6, 4))})


# --- complex parameters ------------------------------------------------------------------------

COMPLEX_CASES = {  # storages that accept complex parameters (real ones refuse them)
    "adafactor": (lambda: atx.adafactor(0.1, min_dim_size_to_factor=2),
                  lambda: optax.adafactor(0.1, min_dim_size_to_factor=2)),
    "adam(nu=Factored)": (lambda: atx.adam(0.1, nu_dtype=atx.Factored(2)), None),
    "adam(nu=BlockMean)": (lambda: atx.adam(0.1, nu_dtype=atx.BlockMean(axes=(0,))), None),
    "adam(nu=bfloat16)": (lambda: atx.adam(0.1, nu_dtype=jnp.bfloat16), None),
    "adam": (lambda: atx.adam(0.1), lambda: optax.adam(0.1)),
}


def _complex_run(tx, dtype, steps=3):
    rng = np.random.default_rng(0)
    shapes = {"w": (3, 4), "v": (5,)}
    draw = lambda s: (rng.normal(size=s) + 1j * rng.normal(size=s)).astype(dtype)
    params = {k: jnp.asarray(draw(s)) for k, s in shapes.items()}
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
        *tx.update(g, s, p)))
    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state, {k: jnp.asarray(draw(s)) for k, s in shapes.items()})
    return params, state


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["complex64", "complex128"])
@pytest.mark.parametrize("name", sorted(COMPLEX_CASES))
def test_complex_parameters_train_without_warnings(name, dtype):
    """No "Casting from complex to real" warning (an error here) with any storage that accepts
    complex parameters; the second moment is kept real, the first complex; equal to optax."""
    ours, theirs = COMPLEX_CASES[name]
    if dtype == np.complex128 and theirs is None:
        pytest.skip("complex128 with the optax twins only")
    with jax.enable_x64(dtype == np.complex128), warnings.catch_warnings():
        warnings.simplefilter("error")
        params, state = _complex_run(ours(), dtype)
        assert all(p.dtype == dtype for p in jax.tree.leaves(params))
        for stat in jax.tree.leaves(state[0].nu):
            assert not jnp.iscomplexobj(stat) or name == "adam", stat.dtype
        if theirs is not None:
            expected, _ = _complex_run(theirs(), dtype)
            # (complex128: the hyperparameters are float32 numbers here, float64 in optax: 5e-9)
            tolerance = 1e-5 if dtype == np.complex64 else 1e-7
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
                np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


def test_a_real_storage_for_a_complex_first_moment_is_refused():
    tx = atx.adam(0.1, mu_dtype=jnp.bfloat16)
    params = {"z": jnp.ones(3, jnp.complex64)}
    kept_real = r"gradient leaf \['z'\] is complex64 but a complex statistic of it is kept as bfloat16"
    with pytest.raises(TypeError, match=kept_real):
        tx.update(params, tx.init(params), params)
