"""Low-precision state: bf16 (nearest / stochastic rounding) and 8-bit blockwise moments.

The rule's arithmetic is float32 whatever the storage: each step equals optax's float32 step started
from the decoded stored state, and the stored state is that float32 state encoded (checked against
a float64 NumPy quantizer written from the paper, tests/reference/numpy_lean_state.py).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import adaptive_tx as atx
from adaptive_tx import quantized
from adaptive_tx import state_precision as sp
from tests.cases import (
    DEFAULT_CODEGEN,
    DEFAULTS,
    case_id,
    gradient_stream,
    make_params,
    max_rel_diff,
    run,
    storage_options,
)
from tests.reference import numpy_lean_state as ref

INT8 = atx.Int8Blockwise(min_size=0)  # quantize every leaf, however small; stochastic rounding
INT8_NEAREST = atx.Int8Blockwise(min_size=0, stochastic=False)  # bitsandbytes' rounding
SPECS = [jnp.bfloat16, "bfloat16_sr", INT8, INT8_NEAREST]
SPEC_IDS = ["bf16", "bf16_sr", "int8", "int8_nearest"]


def _large_params(seed=0):
    """Leaves with more than one block per row, a partial last block, and a vector."""
    rng = np.random.default_rng(seed)
    return {
        "w": rng.normal(size=(3, 600)).astype(np.float32),
        "v": rng.normal(size=(300,)).astype(np.float32),
    }


def _large_grads(steps, seed=1):
    rng = np.random.default_rng(seed)
    shapes = {k: v.shape for k, v in _large_params().items()}
    # log-normal magnitudes: the blocks span several orders of magnitude, as real moments do
    return [
        {
            k: (rng.normal(size=s) * np.exp(2 * rng.normal(size=s))).astype(np.float32)
            for k, s in shapes.items()
        }
        for _ in range(steps)
    ]


# --- the quantization itself ------------------------------------------------------------------


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_dynamic_map_equals_the_bit_layout_of_the_paper(signed):
    np.testing.assert_allclose(sp.dynamic_map(signed), ref.dynamic_map_from_bits(signed), rtol=1e-6)


@pytest.mark.parametrize(
    "shape", [(3, 600), (256,), (2, 10), (), (0, 3), (4, 0)], ids=lambda s: f"shape{s}"
)
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_blockwise_quantization_equals_brute_force_reference(shape, signed):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape) * np.exp(3 * rng.normal(size=shape))
    x = (x if signed else np.abs(x)).astype(np.float32)
    table = ref.dynamic_map_from_bits(signed)
    codes, scales = ref.quantize_blockwise(x, table)
    q = sp.quantize_blockwise(jnp.asarray(x), signed)
    assert q.codes.dtype == (jnp.int8 if signed else jnp.uint8) and q.codes.shape == shape
    np.testing.assert_allclose(q.scales, scales, rtol=1e-7)
    ours = np.asarray(q.codes, np.int64) + (128 if signed else 0)
    # float32 vs float64 can only disagree for a value within rounding of a midpoint
    assert np.sum(ours != codes) <= 1e-3 * ours.size and np.all(np.abs(ours - codes) <= 1)
    expected = ref.dequantize_blockwise(codes, scales, table)
    np.testing.assert_allclose(q.widen(), expected, rtol=1e-6, atol=1e-30)
    if x.size:
        # nearest: the error never exceeds the reference's by more than float32 rounding
        assert np.all(
            np.abs(q.widen() - x) <= np.abs(expected - x) * (1 + 1e-5) + 1e-7 * scales.max()
        )


def test_stochastic_rounding_is_unbiased_within_one_unit_and_deterministic():
    x = jnp.asarray(np.random.default_rng(0).normal(size=20000), jnp.float32)
    key = jax.random.key(7)
    a = sp.round_stochastic_bfloat16(x, key)
    assert a.dtype == jnp.bfloat16
    np.testing.assert_array_equal(a, sp.round_stochastic_bfloat16(x, key))
    assert np.any(np.asarray(a) != np.asarray(sp.round_stochastic_bfloat16(x, jax.random.key(8))))
    a32 = np.asarray(a, np.float64)
    down = np.asarray(x.astype(jnp.bfloat16), np.float64)  # nearest
    unit = (
        np.abs(np.spacing(down.astype(jnp.bfloat16).astype(np.float32)).astype(np.float64)) * 2**16
    )
    assert np.all(np.abs(a32 - np.asarray(x)) <= unit)
    # unbiased: the mean rounding error is ~0 relative to its spread (nearest rounding is biased
    # for a constant input; here we use a quarter-unit offset repeated many times)
    y = jnp.full((100000,), 1.0 + 2.0**-10, jnp.float32)
    mean = float(sp.round_stochastic_bfloat16(y, key).astype(jnp.float32).mean())
    assert abs(mean - float(y[0])) < 2e-5 and float(y.astype(jnp.bfloat16)[0]) == 1.0
    exact = jnp.asarray([1.0, -2.5, 0.0, 3.0e38], jnp.float32)
    np.testing.assert_array_equal(
        sp.round_stochastic_bfloat16(exact, key), exact.astype(jnp.bfloat16)
    )


def _encoder_inputs(signed):
    """Random values over seven decades, every map entry and midpoint, and their float32
    neighbours (normal floats: XLA on CPU flushes subnormals to zero, numpy does not)."""
    rng = np.random.default_rng(5)
    table = sp.dynamic_map(signed)
    values = [
        rng.uniform(-1, 1, 20000),
        10.0 ** rng.uniform(-9, 0, 20000) * rng.choice([-1, 1], 20000),
        table,
        (table[1:] + table[:-1]) / 2,
    ]
    x = np.concatenate(values).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(2)), np.nextafter(x, np.float32(-2))])
    x = np.clip(np.abs(x) if not signed else x, -1, 1)
    return np.where(np.abs(x) < np.finfo(np.float32).tiny, 0, x).astype(np.float32)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_arithmetic_map_encoder_equals_searchsorted_bit_for_bit(signed):
    """The closed-form encoder (no search, no table read) picks exactly the entry a search over
    the sorted map picks: the nearest one, and the two bracketing ones for stochastic rounding."""
    table = sp.dynamic_map(signed)
    midpoints = (table[1:] + table[:-1]) / 2
    x = _encoder_inputs(signed)
    below = np.float32(1) - np.float32(2.0**-24)  # the largest draw
    nearest, entries, upper, lower = jax.jit(
        lambda x: (
            quantized.encode_map(x, signed),
            quantized._entry(jnp.arange(256), signed, jnp),
            quantized.encode_map(x, signed, jnp.zeros(x.shape, jnp.float32)),
            quantized.encode_map(x, signed, jnp.full(x.shape, below)),
        )
    )(jnp.asarray(x))
    np.testing.assert_array_equal(entries, table)  # the step computes the table's values
    np.testing.assert_array_equal(nearest, np.searchsorted(midpoints, x, side="left"))
    # a draw u = 0 takes the entry at or above x (the bracket's upper end; the lowest entry
    # below the map), the largest draw the entry at or below x, unless x is so close to the
    # entry above that u * (hi - lo) < x - lo still holds
    at_or_above = np.searchsorted(table, x, side="left")
    np.testing.assert_array_equal(upper, np.where(at_or_above == 0, 0, at_or_above))
    at_or_below = np.clip(np.searchsorted(table, x, side="right") - 1, 0, 255)
    hi, lo = table[np.minimum(at_or_below + 1, 255)], table[at_or_below]
    closest = (x - lo).astype(np.float32) > below * (hi - lo).astype(np.float32)
    np.testing.assert_array_equal(lower, np.where(closest, at_or_below + 1, at_or_below))
    # the bracket's magnitudes and rank (0 = the entry 0) from the closed form
    magnitudes = np.abs(x)
    rank, lo, hi = jax.jit(lambda y: quantized.map_bracket(y, signed))(jnp.asarray(magnitudes))
    positive = table[127:] if signed else table  # the entries >= 0, in rank order
    expected = np.searchsorted(positive, magnitudes, side="right") - 1
    np.testing.assert_array_equal(rank, expected)
    np.testing.assert_array_equal(lo, positive[expected])
    np.testing.assert_array_equal(hi, positive[np.minimum(expected + 1, len(positive) - 1)])


def test_counter_bits_are_global_balanced_and_decorrelated():
    """Bits depend on the global coordinate (not the array's layout), and change with the key:
    every bit is balanced and uncorrelated between keys (steps, leaves) and neighbours."""
    key = jax.random.key(3)
    flat = quantized.random_bits(key, (1 << 16,))
    np.testing.assert_array_equal(quantized.random_bits(key, (256, 256)).ravel(), flat)
    other = quantized.random_bits(quantized.fold_in(key, 1), (1 << 16,))
    bits = lambda b: (np.asarray(b)[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    a, b = bits(flat).astype(np.float64), bits(other).astype(np.float64)
    assert np.all(np.abs(a.mean(axis=0) - 0.5) < 0.01)  # 5 sigma at n = 65536
    assert np.all(np.abs(((a - 0.5) * (b - 0.5)).mean(axis=0)) < 0.01)
    assert np.all(np.abs(((a[1:] - 0.5) * (a[:-1] - 0.5)).mean(axis=0)) < 0.01)


# --- the engine: float32 arithmetic, storage on store ----------------------------------------


def _decode_tree(stat, like):
    """A statistic as kept in a state, decoded to float32 arrays, one per parameter."""
    treedef = jax.tree.structure(like)
    return treedef.unflatten([sp.decode(leaf) for leaf in sp.split(stat, treedef)])


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_adam_step_is_float32_from_the_stored_state(spec):
    """Each step equals optax's float32 Adam step from the decoded stored moments; the new stored
    moments are optax's float32 moments encoded (8-bit: the reference quantizer's codes)."""
    ours = atx.scale_by_bias_corrected_moments(mu_dtype=spec, nu_dtype=spec)
    reference = optax.scale_by_adam()
    state = ours.init(_large_params())
    step = jax.jit(ours.update)
    for g in _large_grads(30):
        previous = optax.ScaleByAdamState(
            state.count, _decode_tree(state.mu, g), _decode_tree(state.nu, g)
        )
        expected, expected_state = reference.update(g, previous)
        actual, state = step(g, state)
        # floor 0.01: a first moment that nearly cancels differs by float32 rounding (FMA or not)
        assert max_rel_diff(actual, expected, floor=1e-2) <= 1e-5
        for stored, wide, signed in (
            (state.mu, expected_state.mu, True),
            (state.nu, expected_state.nu, False),
        ):
            for s, e in zip(sp.split(stored, jax.tree.structure(g)), jax.tree.leaves(wide)):
                _assert_encodes(s, np.asarray(e), spec, signed)


def _assert_encodes(stored, wide, spec, signed):
    if isinstance(spec, atx.Int8Blockwise):
        table = ref.dynamic_map_from_bits(signed)
        codes, scales = ref.quantize_blockwise(wide, table)
        ours = np.asarray(stored.codes, np.int64) + (128 if signed else 0)
        np.testing.assert_allclose(stored.scales, scales, rtol=1e-6)
        if spec.stochastic:  # one of the two codes around the value (float32: rarely one off)
            low, high = _bracket(wide, scales, table)
            outside = (ours != low) & (ours != high)
            assert np.sum(outside) <= 2e-3 * ours.size and np.all(np.abs(ours - codes) <= 2)
        else:
            assert np.sum(ours != codes) <= 2e-3 * ours.size and np.all(np.abs(ours - codes) <= 1)
        return
    assert stored.dtype == jnp.bfloat16
    value = np.asarray(stored, np.float64)
    unit = np.abs(np.spacing(np.asarray(wide.astype(jnp.bfloat16), np.float32))) * 2**16
    if spec == jnp.bfloat16:
        np.testing.assert_array_equal(stored, wide.astype(jnp.bfloat16))  # nearest
    assert np.all(np.abs(value - wide) <= unit)


def _bracket(x, scales, table):
    """The codes just below and just above x / scale (the positive codes for x > 0, unsigned)."""
    per_coordinate = np.repeat(scales, ref.BLOCK, axis=-1)[..., : x.shape[-1]]
    normalized = x / np.where(per_coordinate > 0, per_coordinate, 1.0)
    low = np.clip(np.searchsorted(table, normalized, side="right") - 1, 0, 255)
    high = np.clip(np.searchsorted(table, normalized, side="left"), 0, 255)
    if table[0] == 0.0:
        low, high = (np.where(normalized > 0, np.maximum(c, 1), c) for c in (low, high))
    return low, high


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_stochastic_8bit_rounding_is_unbiased(signed):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 256)) * np.exp(2 * rng.normal(size=(2, 256)))
    x = jnp.asarray(x if signed else np.abs(x), jnp.float32)
    draws = jax.vmap(lambda k: sp.quantize_blockwise(x, signed, k).widen())(
        jax.random.split(jax.random.key(0), 4000)
    )
    table = ref.dynamic_map_from_bits(signed)
    codes, scales = ref.quantize_blockwise(np.asarray(x), table)
    low, high = _bracket(np.asarray(x), scales, table)
    spacing = (table[high] - table[low]) * np.repeat(scales, 256, axis=-1)
    mean = np.asarray(draws, np.float64).mean(axis=0)
    # each coordinate between two codes: the mean of 4000 draws is within 5 standard errors
    # (spacing / 2 / sqrt(n)); a negative block maximum lies below the signed map's end (-0.993)
    between = low != high
    error = np.abs(mean - np.asarray(x))
    bound = 5 * spacing / 2 / np.sqrt(4000) + 1e-6 * np.abs(np.asarray(x))
    assert np.all(error[between] <= bound[between]) and between.mean() > 0.9
    nearest = np.asarray(sp.quantize_blockwise(x, signed).widen(), np.float64)
    assert np.mean(np.abs(nearest - np.asarray(x))) > 5 * np.mean(np.abs(mean - np.asarray(x)))


def test_8bit_uses_signed_codes_for_first_moments_unsigned_for_second():
    params = {"w": jnp.zeros((16, 300))}
    adam = atx.adam(1e-3, mu_dtype="int8_blockwise", nu_dtype="int8_blockwise").init(params)[0]
    # a container of params-shaped trees: state.nu.codes["w"], state.nu.scales["w"]
    assert adam.mu.codes["w"].dtype == jnp.int8 and adam.nu.codes["w"].dtype == jnp.uint8
    assert adam.nu.scales["w"].shape == (16, 2) and adam.nu.scales["w"].dtype == jnp.float32
    small = atx.adam(1e-3, mu_dtype="int8_blockwise").init({"b": jnp.zeros(300)})[0]
    # below min_size=4096: kept whole in float32 (as bitsandbytes), a (1,) placeholder in scales
    assert small.mu.codes["b"].dtype == jnp.float32 and small.mu.scales["b"].shape == (1,)
    rms = atx.rmsprop(1e-3, centered=True, mu_dtype=INT8, nu_dtype=INT8).init(params)[0]
    assert rms.mu.codes["w"].dtype == jnp.int8 and rms.nu.codes["w"].dtype == jnp.uint8
    ada = atx.adagrad(1e-2, nu_dtype="int8_blockwise").init({"w": jnp.zeros((64, 64))})[0]
    assert ada.sum_of_squares.codes["w"].dtype == jnp.uint8
    (stored,) = sp.split(ada.sum_of_squares, jax.tree.structure({"w": 0}))
    np.testing.assert_allclose(sp.decode(stored), 0.1)  # the initial value


# Every moment-based primitive and alias takes the storage options.
def _with_storage(row):
    """A factory spec -> the alias of the table row `row` with its statistics stored as spec
    (every storage option the alias has: mu_dtype, nu_dtype)."""
    name, kwargs = row
    options = storage_options(name)
    return lambda spec: getattr(atx, name)(**kwargs, **dict.fromkeys(options, spec))


# Every alias with storage options, at its table row's defaults; centred RMSProp (a second
# statistic that can be negative beside a square) and FTRL-Proximal with L1 (its z is signed, and
# the weights it gives are exactly 0 below the L1 strength).
STORAGE_ROWS = [r for r in DEFAULTS if storage_options(r[0])] + [
    ("rmsprop", dict(learning_rate=0.01, centered=True)),
    ("ftrl", dict(learning_rate=0.1, l1_regularization_strength=0.01)),
]
FACTORIES = [(case_id(row), _with_storage(row)) for row in STORAGE_ROWS]


_FLOAT32_RUNS = {}


def _float32_run(name, factory):
    """The float32-state run of a FACTORIES entry (iterates, state), computed once per alias."""
    if name not in _FLOAT32_RUNS:
        full, full_state, _ = run(factory(None), make_params(), gradient_stream(40))
        _FLOAT32_RUNS[name] = (full, full_state)
    return _FLOAT32_RUNS[name]


# Both containers: a float dtype (bfloat16 with stochastic rounding; rounded to nearest it is the
# same cast, tested on its own) and the 8-bit map with its signed and unsigned halves (rounded to
# nearest it differs only in its rounding, tested on its own above).
@pytest.mark.parametrize("spec", SPECS[1:3], ids=SPEC_IDS[1:3])
@pytest.mark.parametrize("name,factory", FACTORIES, ids=[n for n, _ in FACTORIES])
def test_every_alias_trains_close_to_float32_with_stable_state(name, factory, spec):
    """One jit for the whole run, state structure and dtypes stable, and the run stays close to the
    float32 run of the same alias (the storage perturbs, the rule is the same)."""
    params, grads = make_params(), gradient_stream(40)
    iterates, state, traces = run(factory(spec), params, grads)
    full, full_state = _float32_run(name, factory)
    assert traces == 1
    chex.assert_trees_all_equal_shapes_and_dtypes(state, factory(spec).init(params))
    moved = max(
        float(np.max(np.abs(a - p)))
        for a, p in zip(jax.tree.leaves(full[-1]), jax.tree.leaves(params))
    )
    gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(iterates[-1]), jax.tree.leaves(full[-1]))
    )
    # Lion steps each coordinate by +-lr: a stored moment near 0 flips a step's sign (2 lr apart)
    # for a few steps, whatever the storage's precision.
    lion_lr = next(kwargs["learning_rate"] for n, kwargs in STORAGE_ROWS if n == "lion")
    flips = 3 * 2 * lion_lr if name.startswith("lion") else 0.0
    # FTRL's z is the weight up to scale: the 8-bit map's precision reaches the weights directly
    # (its docstring; measured 6.5%). Adan's third moment, of gradient differences, is small
    # beside its block's maximum, where the map is coarsest: 1.8-6.6% over six streams.
    bound = 0.1 if name.startswith(("ftrl", "adan")) and spec is INT8 else 0.05
    assert gap <= max(bound * moved, flips), (gap, moved)
    chex.assert_trees_all_equal_structs(
        *(jax.eval_shape(atx.effective_learning_rate, s) for s in (state, full_state))
    )


def test_stochastic_rounding_is_reproducible_and_depends_on_the_seed():
    params, grads = make_params(), gradient_stream(10)
    runs = [
        run(atx.adam(0.01, mu_dtype=spec, nu_dtype=spec), params, grads)[1]
        for spec in ("bfloat16_sr", "bfloat16_sr", atx.StochasticRounding(seed=1))
    ]
    chex.assert_trees_all_equal(runs[0], runs[1])
    assert any(
        np.any(np.asarray(a) != np.asarray(b))
        for a, b in zip(jax.tree.leaves(runs[0][0].nu), jax.tree.leaves(runs[2][0].nu))
    )


def test_bf16_nearest_freezes_a_slow_average_and_stochastic_rounding_does_not():
    """The seeds' low-precision warning, measured: with b2 = 0.999 a step changes v by at most
    0.1%, less than half a bfloat16 unit (0.39%), so round-to-nearest never lets v decay."""
    params = {"w": jnp.zeros(4096)}
    grads = [{"w": jnp.ones(4096)}] * 5 + [{"w": jnp.zeros(4096)}] * 200
    nu = {}
    for name, spec in (("f32", None), ("bf16", jnp.bfloat16), ("sr", "bfloat16_sr")):
        nu[name] = (
            run(atx.adam(1e-3, nu_dtype=spec), params, grads)[1][0].nu["w"].astype(jnp.float32)
        )
    decayed = 0.999**200
    np.testing.assert_allclose(nu["f32"] / nu["f32"][0], 1.0)
    assert float(nu["bf16"].max() / nu["bf16"].min()) == 1.0
    assert float(nu["bf16"][0]) > float(nu["f32"][0]) / decayed * 0.99  # stuck at its step-5 value
    np.testing.assert_allclose(float(nu["sr"].mean()), float(nu["f32"][0]), rtol=2e-3)


# --- bytes -------------------------------------------------------------------------------------


def test_state_nbytes_counts_what_the_arrays_hold():
    params = {"w": jnp.zeros((512, 512)), "b": jnp.zeros(512)}
    n = 512 * 512 + 512
    fp32 = atx.state_nbytes(atx.adam(1e-3).init(params))
    scalars = fp32 - 8 * n
    assert 0 < scalars < 100  # counts and hyperparameters
    assert (
        atx.state_nbytes(atx.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16).init(params))
        == 4 * n + scalars
    )
    int8 = atx.state_nbytes(
        atx.adam(1e-3, mu_dtype="int8_blockwise", nu_dtype="int8_blockwise").init(params)
    )
    # b (512) stays float32, with a 4-byte placeholder for its scales
    assert int8 == 2 * (512 * 512 + 512 * 2 * 4) + 2 * (4 * 512 + 4) + scalars
    optax_bytes = atx.state_nbytes(optax.adam(1e-3).init(params))
    assert int8 <= 0.27 * optax_bytes
    assert atx.state_nbytes({"a": None, "b": 3.0, "c": jax.ShapeDtypeStruct((10,), jnp.int8)}) == 10


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,kwargs,argument",
    [
        (atx.adam, dict(mu_dtype="int4_blockwise"), "mu_dtype"),
        (atx.adam, dict(nu_dtype=jnp.int32), "nu_dtype"),
        (atx.rmsprop, dict(nu_dtype="float77"), "nu_dtype"),
        (atx.adagrad, dict(nu_dtype=object()), "nu_dtype"),
        (atx.scale_by_inf_norm_moments, dict(mu_dtype=jnp.bool_), "mu_dtype"),
    ],
    ids=["adam-mu", "adam-nu-int", "rmsprop-nu-name", "adagrad-object", "adamax-bool"],
)
def test_bad_storage_spec_raises_naming_the_argument(factory, kwargs, argument):
    args = () if factory is atx.scale_by_inf_norm_moments else (0.1,)
    with pytest.raises(TypeError, match=f"{argument} must be .*got {argument}="):
        factory(*args, **kwargs)


@pytest.mark.parametrize("spec", ["bfloat16_sr", INT8, INT8_NEAREST], ids=SPEC_IDS[1:])
def test_complex_parameters_are_refused_by_real_storages(spec):
    with pytest.raises(TypeError, match="complex parameter of shape \\(3,\\)"):
        atx.adam(0.1, mu_dtype=spec).init({"z": jnp.zeros(3, jnp.complex64)})


def test_injected_decay_rounded_to_one_in_bfloat16_is_refused_with_the_fix():
    """optax.inject_hyperparams casts hyperparameters to the params' dtype: b2 = 0.999 becomes 1 in
    bfloat16 (optax's Adam then divides by 1 - 1^t = 0: NaN). Refused here, naming the fix."""
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    grads = {"w": jnp.full(3, 0.5, jnp.bfloat16)}
    with pytest.raises(ValueError, match="b2 was rounded to 1 in bfloat16.*hyperparam_dtype"):
        optax.inject_hyperparams(atx.adam)(1e-3).init(params)
    tx = optax.inject_hyperparams(atx.adam, hyperparam_dtype=jnp.float32)(1e-3)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"], np.float32), -1e-3, rtol=1e-2)
    theirs, _ = optax.inject_hyperparams(optax.adam)(1e-3).update(
        grads, optax.inject_hyperparams(optax.adam)(1e-3).init(params), params
    )
    assert np.all(np.isnan(np.asarray(theirs["w"], np.float32)))


@pytest.mark.parametrize("spec", SPECS + [atx.Factored(2)], ids=SPEC_IDS + ["factored"])
def test_bfloat16_parameters_keep_their_dtype_with_every_storage(spec):
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.bfloat16), make_params())
    grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.bfloat16), gradient_stream(3))
    mu = None if isinstance(spec, atx.Factored) else spec
    tx = atx.adam(1e-2, mu_dtype=mu, nu_dtype=spec)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for g in grads:
        updates, new_state = step(g, state, params)
        chex.assert_trees_all_equal_dtypes(updates, g)
        chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
        state = new_state
    assert all(bool(jnp.all(jnp.isfinite(u.astype(jnp.float32)))) for u in jax.tree.leaves(updates))


NNX_CASES = {
    "bf16_sr": (
        lambda: atx.adam(1e-2, mu_dtype="bfloat16_sr", nu_dtype="bfloat16_sr"),
        lambda nu: nu["kernel"].dtype == jnp.bfloat16,
    ),
    "int8": (
        lambda: atx.adam(1e-2, mu_dtype=INT8, nu_dtype=INT8),
        lambda nu: nu.codes["kernel"].dtype == jnp.uint8,
    ),
    "factored": (lambda: atx.adafactor(1e-1), lambda nu: nu.row["kernel"].shape == (1, 128)),
}


@pytest.mark.parametrize("name", NNX_CASES)
def test_flax_nnx_optimizer_keeps_the_stored_state(name):
    """nnx.Optimizer writes the state back into variables after each step: 8-bit codes and scales,
    factored rows and columns are params-shaped trees of arrays, so they survive it."""
    factory, check = NNX_CASES[name]
    model = nnx.Linear(256, 128, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, factory(), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (64, 256))
    y = jax.random.normal(jax.random.key(2), (64, 128))

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: ((m(x) - y) ** 2).mean())(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(10)]
    assert losses[-1] < 0.9 * losses[0]
    assert check(optimizer.opt_state[0].nu)


# --- row-sparse leaves: every storage maps rows to its arrays, or refuses the leaf ---------------

ROW_SHAPES = {"v_big": (5000,), "v_small": (300,), "t10x3": (10, 3), "t100x40": (100, 40)}
ROW_SHAPES["t300x64"] = (300, 64)
ROW_SETS = ([5, 0, 5], [9, 3, 1])  # a repeated row (summed), then three distinct ones
_ALL, _VECTORS, _TABLES = set(ROW_SHAPES), {"v_big", "v_small"}, {"t10x3", "t100x40", "t300x64"}
INT8_DEFAULT_NEAREST = atx.Int8Blockwise(stochastic=False)
FP8_NEAREST = atx.Float8Blockwise(min_size=0, stochastic=False)
# (mu_dtype, nu_dtype, leaves refused, storage named in the refusal, tolerance): the tolerance of
# the touched rows' state and update against the dense step's (0: bit for bit; stochastic rounding
# draws other bits for gathered rows; a mean over a row is summed in another order).
ROW_STORAGES = {
    "float32_bfloat16": (None, jnp.bfloat16, set(), None, 0.0),
    # min_size=4096: t300x64 is quantized (a row holds its blocks), v_big too (its blocks span
    # rows), the others are kept whole in float32. (Nearest rounding: a stochastic 8-bit code may
    # differ by one step, up to 14% of a small value, from the dense step's.)
    "bfloat16_sr_int8": ("bfloat16_sr", INT8_DEFAULT_NEAREST, {"v_big"}, "Int8Blockwise", 2**-7),
    # every leaf quantized: a table's row holds its own blocks, a vector's blocks span rows
    "int8_all_nearest": (INT8_NEAREST, INT8_NEAREST, _VECTORS, "Int8Blockwise", 0.0),
    "fp8_all_nearest": (FP8_NEAREST, FP8_NEAREST._replace(dtype="float8_e5m2"), _VECTORS,
                        "Float8Blockwise", 0.0),
    "factored": (None, atx.Factored(2), _TABLES, "Factored", 0.0),
    "block_mean_per_row": (jnp.bfloat16, atx.BlockMean(axes=(1,)), set(), None, 1e-6),
    "block_mean_per_leaf": (None, atx.BlockMean(), _ALL, "BlockMean", 0.0),
}


def _row_problem():
    rng = np.random.default_rng(3)
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in ROW_SHAPES.items()}
    warm = {k: rng.normal(size=s).astype(np.float32) for k, s in ROW_SHAPES.items()}
    values = [
        {k: rng.normal(size=(len(rows),) + s[1:]).astype(np.float32) for k, s in ROW_SHAPES.items()}
        for rows in ROW_SETS
    ]
    return params, warm, values


def _rows_of(tree, names):
    """Every array of a state leaf, flattened with its path, for the leaves in `names`."""
    out = {}
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = jax.tree_util.keystr(path)
        if any(f"['{name}']" in key for name in names):
            out[key] = np.asarray(x)
    return out


@pytest.mark.parametrize("name", sorted(ROW_STORAGES))
def test_row_sparse_steps_touch_their_rows_only_or_the_storage_refuses(name):
    """Untouched rows keep their state bit for bit; touched rows get the dense step's state and
    update (bitwise where nothing differs but the rows gathered); a storage that keeps data across
    rows refuses the leaf, naming itself."""
    mu_dtype, nu_dtype, refused, culprit, rtol = ROW_STORAGES[name]
    tx = atx.adam(0.1, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    params, warm, values = _row_problem()
    for leaf in sorted(refused):
        g = {leaf: atx.RowSparse(ROW_SETS[0], values[0][leaf], ROW_SHAPES[leaf][0])}
        state = tx.init({leaf: params[leaf]})
        with pytest.raises(TypeError, match=rf"leaf \['{leaf}'\] .* row by row: {culprit}\("):
            jax.eval_shape(tx.update, g, state, {leaf: params[leaf]})
    kept = sorted(_ALL - refused)
    if not kept:
        return
    params = {k: params[k] for k in kept}

    @functools.partial(jax.jit, compiler_options=DEFAULT_CODEGEN)  # compared bit for bit
    def steps(state, rows, dense):
        return tx.update(rows, state, params), tx.update(dense, state, params)

    zeros = {k: np.zeros((3,) + ROW_SHAPES[k][1:], np.float32) for k in kept}
    no_rows = {k: atx.RowSparse(ROW_SETS[1], zeros[k], ROW_SHAPES[k][0]) for k in kept}
    _, (_, state) = steps(tx.init(params), no_rows, {k: warm[k] for k in kept})  # warm moments
    for rows, vals in zip(ROW_SETS, values):
        g = {k: atx.RowSparse(rows, vals[k], ROW_SHAPES[k][0]) for k in kept}
        dense = {k: np.asarray(g[k].todense()) for k in kept}
        (row_updates, row_state), (dense_updates, dense_state) = steps(state, g, dense)
        touched = sorted(set(rows))
        for leaf in kept:
            untouched = np.setdiff1d(np.arange(ROW_SHAPES[leaf][0]), touched)
            before, after = _rows_of(state, [leaf]), _rows_of(row_state, [leaf])
            reference = _rows_of(dense_state, [leaf])
            for key, x in after.items():
                if x.shape == (1,):  # a placeholder the storage does not read (no leaf is (1,))
                    np.testing.assert_array_equal(x, before[key], err_msg=key)
                    continue
                np.testing.assert_array_equal(x[untouched], before[key][untouched], err_msg=key)
                if rtol == 0:
                    np.testing.assert_array_equal(x[touched], reference[key][touched], key)
            for moment in ("mu", "nu"):
                decoded = [
                    np.asarray(_decode_tree(getattr(s[0], moment), params)[leaf])[touched]
                    for s in (row_state, dense_state, state)
                ]
                np.testing.assert_allclose(decoded[0], decoded[1], rtol=rtol, atol=0)
                assert not np.array_equal(decoded[0], decoded[2])  # the step moved them
            update = np.asarray(row_updates[leaf].todense())[touched]
            expected = np.asarray(dense_updates[leaf])[touched]
            # (the update is computed in float32 either way: within float32 rounding)
            np.testing.assert_allclose(update, expected, rtol=min(rtol, 1e-6), atol=0)
        state = row_state


@pytest.mark.parametrize("dtype", [jnp.float8_e4m3fn, jnp.float8_e5m2], ids=["e4m3fn", "e5m2"])
def test_float8_stochastic_rounding_is_unbiased_and_on_the_grid(dtype):
    """Every draw is a value of the FP8 grid (the cast is exact); the mean of 2000 draws is
    within 5 standard errors of the value, subnormals and values below the grid included."""
    info = jnp.finfo(dtype)
    top, tiny = float(info.max), 2.0 ** (info.minexp - info.nmant)
    rng = np.random.default_rng(6)
    v = [rng.uniform(-top, top, 300), tiny * rng.uniform(0, 40, 100), [top, -top, 0.0]]
    v = np.concatenate(v)
    v = jnp.asarray(v, jnp.float32)
    draws = jax.vmap(
        lambda k: quantized.round_stochastic_float(v, dtype, quantized.random_bits(k, v.shape))
    )(jax.random.split(jax.random.key(0), 2000))
    np.testing.assert_array_equal(draws.astype(dtype).astype(jnp.float32), draws)
    low = np.asarray(jnp.abs(v).astype(dtype).astype(jnp.float32), np.float64)  # a neighbour
    spacing = np.abs(np.spacing(low.astype(np.float32))) * 2.0 ** (23 - info.nmant)
    spacing = np.maximum(spacing, tiny)
    error = np.abs(np.asarray(draws, np.float64).mean(axis=0) - np.asarray(v, np.float64))
    assert np.all(error <= 5 * spacing / 2 / np.sqrt(2000) + 1e-7 * np.abs(np.asarray(v)))


@pytest.mark.parametrize("spec", ["float8_e4m3fn_blockwise", "float8_e5m2_blockwise"])
@pytest.mark.parametrize(
    "name,factory",
    [(n, f) for n, f in FACTORIES if n in ("adagrad()", "adam()")],
    ids=["adagrad", "adam"],
)
def test_float8_state_trains_close_to_float32(name, factory, spec):
    """As for the other storages, one jit and a run near float32's; FP8 keeps 2 or 3 mantissa
    bits (a spacing of 12.5% to 25%, against 0.7% to 7% for the 8-bit map), so its stochastic
    rounding perturbs more: within 15% of the distance moved (5% for the others)."""
    storage = atx.Float8Blockwise(spec.removesuffix("_blockwise"), min_size=0)
    params, grads = make_params(), gradient_stream(40)
    iterates, state, traces = run(factory(storage), params, grads)
    full, _, _ = run(factory(None), params, grads)
    assert traces == 1
    chex.assert_trees_all_equal_shapes_and_dtypes(state, factory(storage).init(params))
    moved = max(
        float(np.max(np.abs(a - p))) for a, p in zip(*map(jax.tree.leaves, (full[-1], params)))
    )
    gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(*map(jax.tree.leaves, (iterates[-1], full[-1])))
    )
    assert gap <= 0.15 * moved, (gap, moved)
    stored = factory(spec).init({"w": jnp.zeros((64, 128))})  # the spec names the storage
    assert jnp.dtype(spec.removesuffix("_blockwise")) in {x.dtype for x in jax.tree.leaves(stored)}


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz"])
@pytest.mark.parametrize("option", ["mu_dtype", "nu_dtype"])
def test_bare_8bit_float_dtypes_are_refused(dtype, option):
    """A plain 8-bit float dtype has no scale: Adam's second moment of gradients ~1e-2 (1e-4) is
    below float8_e4m3fn's smallest subnormal (2e-3) and would be stored as 0 (steps m / eps), so
    it is refused with the per-block storages as the fix; those keep it (the gradient's square
    survives a step)."""
    with pytest.raises(TypeError, match="keeps statistics without a scale.*_blockwise"):
        atx.adam(0.1, **{option: jnp.dtype(dtype)})
    assert jnp.asarray(1e-4, jnp.float8_e4m3fn) == 0  # what the bare dtype would have stored
    spec = "float8_e4m3fn_blockwise" if "e4m3" in dtype else "float8_e5m2_blockwise"
    tx = atx.adam(0.1, **{option: spec})
    _, state = tx.update(jnp.full(4, 1e-2), tx.init(jnp.zeros(4)))
    stat = state[0].mu if option == "mu_dtype" else state[0].nu
    assert float(atx.state_precision.decode(stat)[0]) > 0
