"""Effective learning rates against float64 closed forms, for every row of the alias table."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import adaptive_tx as atx
from tests.cases import ALIASES, DEFAULTS, case_id, gradient_stream, make_params, run
from tests.reference import numpy_effective_rates as ref

STEPS = 60
# Rows whose update is not -rate * d: momentum after the rate, NAdam's look-ahead, weight decay.
NO_DIRECTION_CHECK = ("momentum", "nesterov", "nadam", "adamw", "nadamw", "adamaxw")


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
    _, state, _ = run(getattr(atx, name)(**kwargs), make_params(), grads)
    rates = jax.jit(atx.effective_learning_rate)(state)
    lr = _last_rate(kwargs["learning_rate"], len(grads))
    for leaf, rate in rates.items():
        expected = ref.effective_rate(name, [g[leaf] for g in grads], lr, **_hyper(kwargs))
        assert rate.shape == make_params()[leaf].shape
        assert _rel_err(rate, expected) < _tolerance(name, kwargs), leaf


@pytest.mark.parametrize(
    "row",
    [r for r in ALIASES if not {r[0], *r[1]} & set(NO_DIRECTION_CHECK)],
    ids=case_id,
)
def test_last_update_is_minus_rate_times_direction(row):
    """The definition: u_T = -eta_eff * d_T, d_T = g_T (Adagrad, RMSProp) or m_T (Adam family)."""
    name, kwargs = row
    grads = gradient_stream(STEPS)
    tx = getattr(atx, name)(**kwargs)
    iterates, state, _ = run(tx, make_params(), grads[:-1])
    updates, state = jax.jit(tx.update)(grads[-1], state, iterates[-1])
    rates = jax.jit(atx.effective_learning_rate)(state)
    for leaf in rates:
        leaf_grads = [g[leaf] for g in grads]
        if name in ("adagrad", "rmsprop"):
            direction = np.asarray(leaf_grads[-1], np.float64)
        else:
            direction = ref.first_moment(leaf_grads, **_hyper(kwargs))
        expected = -np.asarray(rates[leaf], np.float64) * direction
        # m_T is a float32 EMA in the library: allow its cancellation error, 1e-5 of the leaf's scale.
        atol = 1e-5 * np.abs(expected).max()
        np.testing.assert_allclose(updates[leaf], expected, rtol=2e-5, atol=atol)


def test_rate_before_the_first_step_is_the_first_steps_rate():
    tx = atx.adam(0.1, eps=1e-3)
    rate = atx.effective_learning_rate(tx.init(jnp.zeros(3)))
    np.testing.assert_allclose(rate, 0.1 / (1 - 0.9) / 1e-3, rtol=1e-6)


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
