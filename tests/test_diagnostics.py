"""Effective learning rates against float64 closed forms, for every row of the alias table."""

import importlib.util
import inspect
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import adaptive_tx as atx
from adaptive_tx.compat import keras as compat_keras
from adaptive_tx.compat import torch as compat_torch
from tests.cases import (
    ALIASES,
    DEFAULTS,
    SCHEDULE,
    case_id,
    gradient_stream,
    make_params,
    row_stepper,
    run,
)
from tests.reference import numpy_effective_rates as ref

STEPS = 60


def dense_stream(steps: int = STEPS, seed: int = 2) -> list[dict]:
    """Gaussian gradients without zeros: every coordinate moves every step."""
    rng = np.random.default_rng(seed)
    shapes = {k: v.shape for k, v in make_params().items()}
    return [
        {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(steps)
    ]


STREAMS = {"sparse": lambda: gradient_stream(STEPS), "dense": dense_stream}


def _last_rate(learning_rate, steps):
    return float(learning_rate(steps - 1)) if callable(learning_rate) else learning_rate


def _hyper(kwargs):
    return {k: v for k, v in kwargs.items() if k not in ("learning_rate", "weight_decay", "mask")}


def _tolerance(name, kwargs):
    """2e-5, except radam with b2 = 0.999: optax's arithmetic (kept for parity) takes rho_inf from the
    exact b2 but b2^t from b2 rounded to float32, which puts 2.5e-4 into r_t at step 60 (see
    tests/test_reference.py::_tolerance for the numbers)."""
    return 5e-4 if name == "radam" and "b2" not in kwargs else 2e-5


def _rel_err(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-30)))


# Every row on the sparse stream; one row per alias on the dense stream.
CLOSED_FORM_CASES = [(row, "sparse") for row in ALIASES] + [(row, "dense") for row in DEFAULTS]


@pytest.mark.parametrize(
    "row, stream", CLOSED_FORM_CASES, ids=[f"{case_id(r)}-{s}" for r, s in CLOSED_FORM_CASES]
)
def test_rate_matches_closed_form(row, stream):
    name, kwargs = row
    grads = STREAMS[stream]()
    _, rates, _, _ = _last_step(row_stepper(row, make=_stepper), make_params(), grads)
    lr = _last_rate(kwargs["learning_rate"], len(grads))
    for leaf, rate in rates.items():
        expected = ref.effective_rate(name, [g[leaf] for g in grads], lr, **_hyper(kwargs))
        assert rate.shape == make_params()[leaf].shape
        assert _rel_err(rate, expected) < _tolerance(name, kwargs), leaf


def _stepper(tx):
    """A jitted step of `tx` that also reads the rate from the new state (one compilation)."""

    @jax.jit
    def step(p, s, g):
        u, after = tx.update(g, s, p)
        return optax.apply_updates(p, u), after, u, atx.effective_learning_rate(after)

    step.init = tx.init
    return step


def _last_step(step, params, grads):
    """Runs a `_stepper` step over `grads`. Returns u_T, the rate read from the state after it, and
    the parameters and state before it."""
    state = step.init(params)
    for g in grads[:-1]:
        params, state, _, _ = step(params, state, g)
    _, _, updates, rates = step(params, state, grads[-1])
    return updates, rates, params, state


def _weight_decay(name, kwargs):
    decaying = ("adamw", "nadamw", "adamaxw", "adan", "ademamix", "lamb", "lion")
    if name not in (*decaying, "schedule_free_adamw"):
        return None
    default = inspect.signature(getattr(atx, name)).parameters["weight_decay"].default
    return kwargs.get("weight_decay", default)


def _alias_direction(name, kwargs, leaf_grads):
    """d_T in float64 (tests/reference): g_T, m_T or NAdam's look-ahead."""
    if name in ("adagrad", "rmsprop", "adafactor", "schedule_free_adamw"):
        return np.asarray(leaf_grads[-1], np.float64)
    if name in ("adopt", "laprop", "adan", "ademamix", "sm3", "novograd"):
        return ref.newer_direction(name, leaf_grads, **_hyper(kwargs))
    if name == "adadelta":
        return ref.adadelta_direction(leaf_grads, **_hyper(kwargs))
    if name == "lion":
        return ref.lion_direction(leaf_grads, **_hyper(kwargs))
    if name == "rprop":
        return ref.rprop_direction(leaf_grads, kwargs["learning_rate"], **_hyper(kwargs))
    b1 = kwargs.get("b1", 0.9)
    if name in ("nadam", "nadamw") or kwargs.get("nesterov"):
        return ref.nesterov_direction(leaf_grads, b1)
    return ref.first_moment(leaf_grads, b1, start=1e-6 if name == "yogi" else 0.0)


ADAFACTOR_ROWS = [
    ("adafactor", dict(learning_rate=0.05)),
    ("adafactor", dict(learning_rate=0.05, multiply_by_parameter_scale=False)),
    ("adafactor", dict(learning_rate=SCHEDULE, clipping_threshold=None)),
]


@pytest.mark.parametrize("row", ALIASES + ADAFACTOR_ROWS, ids=case_id)
def test_update_is_minus_rate_times_direction_plus_the_documented_terms(row):
    """u_T = -rate * d_T for every alias (d_T from the float64 reference), plus exactly what the
    docstring says is left out: weight decay, a momentum trace, Adafactor's per-leaf factor."""
    name, kwargs = row
    grads = gradient_stream(STEPS)
    params = jax.tree.map(lambda p: 10 * p, make_params())  # parameter RMS ~10 (Adafactor)
    updates, rates, before, state = _last_step(row_stepper(row, make=_stepper), params, grads)
    lr = _last_rate(kwargs["learning_rate"], STEPS)
    mask = kwargs.get("mask", {k: True for k in params})
    mask = mask(params) if callable(mask) else mask
    for leaf, rate in rates.items():
        leaf_grads = [g[leaf] for g in grads]
        expected = -np.asarray(rate, np.float64) * _alias_direction(name, kwargs, leaf_grads)
        if name == "adafactor":
            clipping = kwargs.get("clipping_threshold", 1.0)
            min_scale = 1e-3 if kwargs.get("multiply_by_parameter_scale", True) else None
            expected *= ref.adafactor_leaf_factor(
                leaf_grads[-1], np.asarray(rate), lr, before[leaf], clipping, min_scale
            )
        momentum = kwargs.get("momentum")
        if momentum:  # a trace after the learning rate
            trace = np.asarray(optax.tree.get(state, "trace")[leaf], np.float64)
            nesterov = kwargs.get("nesterov", False)
            expected = (1 + momentum * nesterov) * expected + momentum ** (1 + nesterov) * trace
        decay = _weight_decay(name, kwargs)
        if decay is not None and mask[leaf]:
            decay = _last_rate(decay, STEPS)
            expected = expected - lr * decay * np.asarray(before[leaf], np.float64)
        if name == "lamb":  # the per-leaf trust ratio, after the decay
            expected = expected * ref.trust_ratio(expected, lr, before[leaf])
        if name == "schedule_free_adamw":  # the rate's step was z's: then the interpolation
            hyper = {k: kwargs[k] for k in ("b1", "weight_lr_power") if k in kwargs}
            expected = ref.schedule_free_update(
                expected, before[leaf], state.z[leaf], state.weight_sum, state.max_lr, lr, **hyper
            )
        # m_T is a float32 EMA in the library: allow its cancellation error, 1e-5 of the leaf's scale.
        atol = 1e-5 * np.abs(expected).max()
        if name == "schedule_free_adamw":  # u = y_T - y_{T-1}: a float32 difference of values
            # ~10, so it carries their rounding, an ulp of the parameters (optax's alike)
            atol = max(atol, 2 * np.finfo(np.float32).eps * np.abs(before[leaf]).max())
        np.testing.assert_allclose(updates[leaf], expected, rtol=2e-5, atol=atol, err_msg=leaf)


# (framework, preset, kwargs): d_T, and the momentum trace's place (torch: before the rate).
PRESET_ROWS = [
    ("torch", "Adagrad", {}),
    ("torch", "RMSprop", dict(momentum=0.9)),
    ("torch", "Adam", {}),
    ("torch", "AdamW", {}),
    ("torch", "Adamax", {}),
    ("torch", "NAdam", {}),
    ("torch", "RAdam", {}),
    ("keras", "Adagrad", {}),
    ("keras", "RMSprop", dict(momentum=0.9)),
    ("keras", "Adam", {}),
    ("keras", "AdamW", {}),
    ("keras", "Adamax", {}),
    ("keras", "Nadam", {}),
    ("keras", "Adafactor", {}),
    ("torch", "Adadelta", {}),
    ("torch", "Rprop", {}),
    ("keras", "Adadelta", {}),
    ("keras", "Lion", {}),
]


@pytest.mark.parametrize("row", PRESET_ROWS, ids=lambda r: f"{r[0]}.{r[1]}({r[2]})")
def test_preset_update_is_minus_rate_times_direction_plus_the_documented_terms(row):
    framework, name, kwargs = row
    preset = getattr({"torch": compat_torch, "keras": compat_keras}[framework], name)
    tx = preset(**kwargs)
    grads, params = gradient_stream(STEPS), jax.tree.map(lambda p: 10 * p, make_params())
    updates, rates, before, state = _last_step(_stepper(tx), params, grads)
    signature = inspect.signature(preset).parameters
    lr = signature["lr" if framework == "torch" else "learning_rate"].default
    for leaf, rate in rates.items():
        leaf_grads = [g[leaf] for g in grads]
        rate = np.asarray(rate, np.float64)
        if name in ("Adagrad", "RMSprop", "Adafactor"):
            direction = np.asarray(leaf_grads[-1], np.float64)
        elif name == "Adadelta":
            eps_name = "eps" if framework == "torch" else "epsilon"
            rho, eps = signature["rho"].default, signature[eps_name].default
            direction = ref.adadelta_direction(leaf_grads, rho, eps)
        elif name == "Lion":
            direction = ref.lion_direction(leaf_grads, 0.9, 0.99)
        elif name == "Rprop":
            direction = ref.rprop_direction(leaf_grads, lr)
        elif name in ("NAdam", "Nadam"):
            psi = 0.004 if framework == "torch" else 1
            direction = ref.nesterov_direction(leaf_grads, 0.9, psi)
        else:
            direction = ref.first_moment(leaf_grads, 0.9)
        expected = -rate * direction
        if name == "Adafactor":  # keras' relative step min(lr, 1/sqrt(t)) at t = STEPS
            step_size = min(lr, 1 / np.sqrt(STEPS))
            expected *= ref.adafactor_leaf_factor(leaf_grads[-1], rate, step_size, before[leaf])
        if "momentum" in kwargs:
            trace = np.asarray(optax.tree.get(state, "trace")[leaf], np.float64)
            mu = kwargs["momentum"]
            expected += -lr * mu * trace if framework == "torch" else mu * trace
        if name == "AdamW":
            decay = signature["weight_decay"].default
            expected -= lr * decay * np.asarray(before[leaf], np.float64)
        atol = 1e-5 * np.abs(expected).max()
        np.testing.assert_allclose(updates[leaf], expected, rtol=2e-5, atol=atol, err_msg=leaf)


def test_rate_before_the_first_step_is_the_documented_value():
    """Before any step: the scale of the initial statistics at t = 1, as the docstring says:
    eta / (1 - b1) / eps for Adam (1e6 at eta = 1e-3, eps = 1e-8), inf for Adafactor."""
    rate_of = jax.jit(atx.effective_learning_rate)
    rate = rate_of(atx.adam(1e-3).init(jnp.zeros(3)))
    np.testing.assert_allclose(rate, 1e-3 / (1 - 0.9) / 1e-8, rtol=1e-6)
    assert np.all(np.isinf(rate_of(atx.adafactor(1e-3).init(jnp.zeros(3)))))


def test_rate_follows_injected_learning_rate():
    tx = optax.inject_hyperparams(atx.rmsprop)(learning_rate=0.1, decay=0.5)
    params = jnp.zeros(2)
    state = tx.init(params)
    _, state = tx.update(jnp.array([1.0, 2.0]), state)
    state.hyperparams["learning_rate"] = jnp.asarray(0.01)
    _, state = tx.update(jnp.array([1.0, 2.0]), state)
    expected = 0.01 / np.sqrt(np.array([1.0, 4.0]) * (1 - 0.5**2) + 1e-8)
    np.testing.assert_allclose(atx.effective_learning_rate(state), expected, rtol=1e-6)


def test_rate_of_a_chain_with_one_primitive():
    tx = optax.chain(
        optax.clip_by_global_norm(1e3),
        atx.scale_by_sum_of_squares(initial_accumulator_value=0.0, eps=0.0),
        atx.scale_by_learning_rate(0.5),
    )
    _, state = tx.update(jnp.array([4.0, 0.0]), tx.init(jnp.zeros(2)))
    np.testing.assert_allclose(atx.effective_learning_rate(state), [0.125, 0.0])


def test_nnx_optimizer_state_is_accepted():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, atx.adagrad(0.1, eps=0.0), wrt=nnx.Param)
    grads = nnx.grad(lambda m: (m(jnp.ones((4, 3))) ** 2).mean())(model)
    optimizer.update(model, grads)
    rates = atx.effective_learning_rate(optimizer.opt_state)
    expected = 0.1 / np.sqrt(0.1 + np.asarray(grads["kernel"][...], np.float64) ** 2)
    np.testing.assert_allclose(rates["kernel"], expected, rtol=1e-6)


@pytest.mark.parametrize(
    "tx",
    [
        optax.sgd(0.1),
        atx.scale_by_sum_of_squares(),  # no learning rate
        optax.chain(atx.scale_by_sum_of_squares(), atx.adam(0.1)),  # two adaptive primitives
    ],
    ids=["sgd", "no-learning-rate", "two-primitives"],
)
def test_states_without_one_rate_are_rejected(tx):
    with pytest.raises(ValueError, match="exactly one adaptive primitive"):
        atx.effective_learning_rate(tx.init(jnp.zeros(2)))


def _assert_summarizes(summary, rate, threshold):
    """`summary` holds NumPy's statistics of the float64 `rate`."""
    rate = np.ravel(rate)
    np.testing.assert_allclose(
        [summary.min, summary.median, summary.max, summary.mean],
        [rate.min(), np.median(rate), rate.max(), rate.mean()],
        rtol=1e-5,
    )
    assert float(summary.fraction_below) == pytest.approx(np.mean(rate < threshold))


def test_summary_matches_numpy_under_jit():
    tx = atx.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
    params = {"layer": {"kernel": jnp.zeros((3, 4))}, "empty": jnp.zeros((0,))}
    g = jax.random.normal(jax.random.key(0), (3, 4)) * jnp.logspace(-3, 3, 12).reshape(3, 4)
    _, state = tx.update({"layer": {"kernel": g}, "empty": jnp.zeros((0,))}, tx.init(params))
    summary = jax.jit(atx.effective_learning_rate_summary, static_argnums=1)(state, 0.01)
    rate = 1.0 / np.abs(np.asarray(g, np.float64)).ravel()
    _assert_summarizes(summary["layer/kernel"], rate, 0.01)
    assert 0 < float(summary["layer/kernel"].fraction_below) < 1
    assert np.isnan(summary["empty"].median)


def test_adagrad_rates_die_and_rmsprop_rates_recover():
    """The seeds' non-stationary case: large gradients, then small ones."""
    grads = [jnp.full(1, 10.0)] * 100 + [jnp.full(1, 0.1)] * 100
    final = {}
    for name, tx in {"adagrad": atx.adagrad(0.1), "rmsprop": atx.rmsprop(0.1)}.items():
        _, state, _ = run(tx, jnp.zeros(1), grads)
        final[name] = float(atx.effective_learning_rate(state)[0])
    assert final["adagrad"] < 0.1 / np.sqrt(100 * 100.0) * 1.01  # still held down by the past
    # back near lr / |g| = 1 of the small gradients (0.9^100 of the past is left in nu)
    assert final["rmsprop"] > 0.85


def test_summary_where_selects_coordinates():
    """`where` summarizes the selected coordinates only, against NumPy on the same rates."""
    tx = atx.adam(0.1)
    params = {"embed": jnp.zeros((6, 3)), "bias": jnp.zeros(3)}
    g = {"embed": jnp.zeros((6, 3)).at[1:3].set(jnp.array([[1.0, 2.0, 3.0], [0.1, 0.2, 0.3]]))}
    g["bias"] = jnp.ones(3)
    _, state = tx.update(g, tx.init(params))
    seen = (jnp.arange(6)[:, None] >= 1) & (jnp.arange(6)[:, None] < 3)  # the rows with gradients
    summary = jax.jit(atx.effective_learning_rate_summary, static_argnums=1)(
        state, 0.9, {"embed": seen}
    )
    # Adam's first step: eta / (1 - b1) / (|g| + eps) = 1 / |g| on the rows with gradients.
    _assert_summarizes(summary["embed"], 1.0 / np.abs(np.asarray(g["embed"][1:3], np.float64)), 0.9)
    whole = atx.effective_learning_rate_summary(state, 0.9)
    assert float(whole["embed"].max) > 1e6  # the unseen rows' eta/eps, left out of `summary`
    assert summary["bias"] == whole["bias"]
    none = atx.effective_learning_rate_summary(state, 0.9, {"embed": jnp.zeros((6, 1), bool)})
    assert all(np.isnan(x) for x in none["embed"])


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"embedding": True}, "where has no leaf 'embedding'; the leaves are 'bias', 'embed'"),
        ({"embed": jnp.ones((5, 1), bool)}, r"where\['embed'\] has shape \(5, 1\)"),
    ],
)
def test_summary_where_errors(where, message):
    tx = atx.adam(0.1)
    state = tx.init({"embed": jnp.zeros((6, 3)), "bias": jnp.zeros(3)})
    with pytest.raises(ValueError, match=message):
        atx.effective_learning_rate_summary(state, 1e-6, where)


def test_summary_never_hides_a_nan():
    """A NaN gradient (no guard) puts NaN into Adam's v: that coordinate's rate is NaN, and the
    leaf's summary says so in every statistic instead of skipping it."""
    tx = atx.adam(0.1)
    params = {"w": jnp.zeros(4), "b": jnp.zeros(2)}
    grads = {"w": jnp.array([1.0, jnp.nan, 2.0, 3.0]), "b": jnp.ones(2)}
    _, state = jax.jit(tx.update)(grads, tx.init(params))
    summarize = jax.jit(atx.effective_learning_rate_summary, static_argnums=1)
    summary = summarize(state, 1e9)
    assert all(np.isnan(x) for x in summary["w"])  # fraction_below too, not 0 (or 0.75)
    assert not any(np.isnan(x) for x in summary["b"])
    # Coordinates that `where` leaves out do not count: the other three are summarized.
    seen = {"w": jnp.array([True, False, True, True]), "b": jnp.ones(2, bool)}
    kept = summarize(state, 1e9, seen)["w"]
    _assert_summarizes(kept, 1.0 / np.array([1.0, 2.0, 3.0]), 1e9)


def _rowwise_adagrad_rate(grads, lr, eps=1e-7):
    """Float64 reference: one rate per row, lr / sqrt(sum_t mean_row(g_t^2) + eps), 0 for a row
    that never had a gradient (as Adagrad's where G = 0)."""
    total = sum(np.mean(np.asarray(g, np.float64) ** 2, axis=1, keepdims=True) for g in grads)
    return np.where(total > 0, lr / np.sqrt(total + eps), 0.0)


def test_multi_transform_rates_come_from_the_group_that_updates_each_leaf():
    """An embedding table with row-wise Adagrad, AdamW for the rest, a frozen bias: one
    params-shaped tree, each leaf against its group's float64 closed form, NaN for the bias."""
    labels = {"emb": "table", "w": "rest", "b": "frozen"}
    groups = {
        "table": atx.rowwise_adagrad(0.5),
        "rest": atx.adamw(0.01),
        "frozen": optax.set_to_zero(),
    }
    tx = optax.multi_transform(groups, labels)
    params, grads = make_params(), gradient_stream(20)
    _, state, _ = run(tx, params, grads)
    rates = jax.jit(atx.effective_learning_rate)(state, params)
    emb_grads = [g["emb"] for g in grads]
    np.testing.assert_allclose(rates["emb"], _rowwise_adagrad_rate(emb_grads, 0.5), rtol=2e-5)
    expected_w = ref.effective_rate("adam", [g["w"] for g in grads], 0.01)
    np.testing.assert_allclose(rates["w"], expected_w, rtol=2e-5)
    assert rates["b"].shape == params["b"].shape and np.all(np.isnan(rates["b"]))
    summary = jax.jit(atx.effective_learning_rate_summary)(state, params=params)
    assert all(np.isnan(x) for x in summary["b"]) and float(summary["w"].min) > 0
    # Without params the frozen leaf has no shape in the state: a clear error, not a guess.
    with pytest.raises(ValueError, match="pass params="):
        jax.jit(atx.effective_learning_rate)(state)
    # Every leaf in an adaptive group: params are not needed.
    both = optax.multi_transform(
        {"table": groups["table"], "rest": groups["rest"]}, {**labels, "b": "rest"}
    )
    rates = jax.eval_shape(atx.effective_learning_rate, both.init(params))
    assert [r.shape for r in jax.tree.leaves(rates)] == [(4,), (10, 1), (6, 4)]


def test_nnx_optimizer_with_parameter_groups():
    """flax.nnx stores a group's placeholders for the other groups' leaves as variables too."""
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    labels = lambda params: jax.tree.map(lambda p: "kernel" if p.ndim == 2 else "bias", params)
    tx = optax.multi_transform(
        {"kernel": atx.adagrad(0.1, eps=0.0), "bias": atx.adam(0.01)}, labels
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = nnx.grad(lambda m: (m(jnp.ones((4, 3))) ** 2).mean())(model)
    optimizer.update(model, grads)
    rates = jax.jit(atx.effective_learning_rate)(optimizer.opt_state)
    kernel_grad = np.asarray(grads["kernel"][...], np.float64)
    np.testing.assert_allclose(rates["kernel"], 0.1 / np.sqrt(0.1 + kernel_grad**2), rtol=1e-6)
    expected = ref.effective_rate("adam", [np.asarray(grads["bias"][...])], 0.01)
    np.testing.assert_allclose(rates["bias"], expected, rtol=1e-5)


def test_multi_transform_group_with_two_primitives_is_named():
    tx = optax.multi_transform(
        {"a": optax.chain(atx.scale_by_sum_of_squares(), atx.adam(0.1)), "b": atx.adam(0.1)},
        {"w": "a", "v": "b"},
    )
    state = tx.init({"w": jnp.zeros(2), "v": jnp.zeros(2)})
    with pytest.raises(ValueError, match="the multi_transform group 'a' to hold exactly one"):
        atx.effective_learning_rate(state)


def test_diagnostics_imports_without_flax(monkeypatch):
    """flax is imported only where it is used (nnx states arrive with flax already imported)."""
    for name in [m for m in sys.modules if m == "flax" or m.startswith("flax.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import flax...` now raises ImportError
    monkeypatch.setitem(sys.modules, "flax", None)
    spec = importlib.util.find_spec("adaptive_tx.diagnostics")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tx = atx.adagrad(0.5, initial_accumulator_value=0.0, eps=0.0)
    _, state = jax.jit(tx.update)(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    np.testing.assert_allclose(jax.jit(module.effective_learning_rate)(state), [0.25])


def test_docs_speak_of_the_library_alone():
    """The guide and the module docstring are written for a reader who knows only the library."""
    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "effective_learning_rate.md"
    for text in (page.read_text(), atx.diagnostics.__doc__):
        assert not re.search(r"\bseeds\b|\bseeds'|\bthe issue\b|Targets of the issue", text)
