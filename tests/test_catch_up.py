"""Catch-up row-sparse updates (`adaptive_tx.sparse.catch_up`) against dense optax.

Every case trains a table on Zipf-distributed lookups whose gradient depends on the rows read (a
quadratic loss), the catch-up optimizer on row-sparse gradients through its forward view, the optax
twin on the dense gradient; after a flush the two tables must agree to 1e-5 of the table's largest
entry. All cases of a grid share one jitted ``lax.scan``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests.cases import DEFAULT_CODEGEN

V, D, K, STEPS = 64, 3, 4, 1000
RARE = V - 1  # looked up at the first and the last step only: a gap of 998 steps (> J = 214)
TOLERANCE = 1e-5


def _cosine(peak, total, start=0):
    schedule = optax.warmup_cosine_decay_schedule(0.0, peak, 100, total)
    return lambda count: schedule(count - start)


LATE = 10_000

# name -> (alias, kwargs, optax twin, first step): Adam, AdamW, NAdam(W), AMSGrad, RMSProp with
# momentum, Adagrad; constant and warmup-cosine rates, with and without weight decay, from step 0
# and from step 10,000.
CASES = {
    "adam": (atx.adam, dict(learning_rate=1e-2), lambda: optax.adam(1e-2), 0),
    "adamw-cosine": (
        atx.adamw,
        dict(learning_rate=_cosine(2e-2, STEPS), weight_decay=0.5),
        lambda: optax.adamw(_cosine(2e-2, STEPS), weight_decay=0.5),
        0,
    ),
    "nadam-cosine": (
        atx.nadam,
        dict(learning_rate=_cosine(2e-2, STEPS)),
        lambda: optax.nadam(_cosine(2e-2, STEPS)),
        0,
    ),
    "nadamw": (
        atx.nadamw,
        dict(learning_rate=1e-2, weight_decay=0.5),
        lambda: optax.nadamw(1e-2, weight_decay=0.5),
        0,
    ),
    "amsgrad": (atx.amsgrad, dict(learning_rate=1e-2), lambda: optax.amsgrad(1e-2), 0),
    "rmsprop-momentum": (
        atx.rmsprop,
        dict(learning_rate=1e-3, momentum=0.9),
        lambda: optax.rmsprop(1e-3, momentum=0.9),
        0,
    ),
    "rmsprop-centered-nesterov-cosine": (
        atx.rmsprop,
        dict(learning_rate=_cosine(2e-3, STEPS), momentum=0.9, nesterov=True, centered=True),
        lambda: optax.rmsprop(_cosine(2e-3, STEPS), momentum=0.9, nesterov=True, centered=True),
        0,
    ),
    "adagrad": (atx.adagrad, dict(learning_rate=0.1), lambda: optax.adagrad(0.1), 0),
    "adamw-cosine-late": (
        atx.adamw,
        dict(learning_rate=_cosine(2e-2, LATE + STEPS, LATE), weight_decay=0.5),
        lambda: optax.adamw(_cosine(2e-2, LATE + STEPS, LATE), weight_decay=0.5),
        LATE,
    ),
    "rmsprop-momentum-late": (
        atx.rmsprop,
        dict(learning_rate=1e-3, momentum=0.9),
        lambda: optax.rmsprop(1e-3, momentum=0.9),
        LATE,
    ),
}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, V) ** 1.1
    ids = rng.choice(V - 1, size=(STEPS, K), p=p / p.sum()).astype(np.int32)
    ids[0, 0] = ids[-1, 0] = RARE
    table = rng.normal(size=(V, D)).astype(np.float32)
    target = rng.normal(size=(V, D)).astype(np.float32)
    noise = rng.normal(size=(STEPS, K, D)).astype(np.float32)
    params = {"emb": jnp.asarray(table)}
    return (jnp.asarray(ids), jnp.asarray(noise)), params, jnp.asarray(target)


def _grads(rows, ids, noise, target):
    # A noisy quadratic loss: without the noise, Adam at the optimum steps by ±lr on gradients
    # of rounding size, and any two float32 computations part ways there.
    return 0.1 * (rows - target[ids]) + noise


def _at_step(tree, count):
    """Every int32 leaf (step counters, last steps) set to `count`: a state `count` steps in."""
    return jax.tree.map(
        lambda x: jnp.full_like(x, count) if x.dtype == jnp.int32 else x, tree
    )


def _train(cases):
    """One jitted scan over STEPS for every case: (flushed catch-up, dense) params and states."""
    ids, params, target = _data()
    txs = {name: atx.sparse.catch_up(case[0], **case[1]) for name, case in cases.items()}
    twins = {name: case[2]() for name, case in cases.items()}

    def body(carry, batch):
        step_ids, noise = batch
        new = {}
        for name, (p, s, dp, ds) in carry.items():
            tx = txs[name]
            rows = tx.rows(s, p, {"emb": step_ids})["emb"]
            g_rows = _grads(rows, step_ids, noise, target)
            g = {"emb": atx.RowSparse(step_ids, g_rows, V)}
            u, s = tx.update(g, s, p)
            p = atx.sparse.apply_updates(p, u)
            dense_rows = _grads(dp["emb"][step_ids], step_ids, noise, target)
            dg = {"emb": jnp.zeros((V, D)).at[step_ids].add(dense_rows)}
            du, ds = twins[name].update(dg, ds, dp)
            dp = optax.apply_updates(dp, du)
            new[name] = (p, s, dp, ds)
        return new, None

    @jax.jit
    def run(carry):
        carry, _ = jax.lax.scan(body, carry, ids)
        return {name: (txs[name].flush(s, p), (dp, ds)) for name, (p, s, dp, ds) in carry.items()}

    carry = {
        name: (
            params,
            _at_step(txs[name].init(params), cases[name][3]),
            params,
            _at_step(twins[name].init(params), cases[name][3]),
        )
        for name in cases
    }
    return run(carry)


@pytest.fixture(scope="module")
def trained():
    return _train(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_catch_up_equals_dense_optax(trained, name):
    (params, state), (dense_params, dense_state) = trained[name]
    scale = float(jnp.max(jnp.abs(dense_params["emb"])))
    error = float(jnp.max(jnp.abs(params["emb"] - dense_params["emb"])))
    assert error <= TOLERANCE * scale, (name, error / scale)
    # The rare row moved over its 998-step gap as dense training moved it.
    assert float(jnp.max(jnp.abs(params["emb"][RARE] - dense_params["emb"][RARE]))) <= TOLERANCE * scale
    # Every row is current after the flush, its statistics as dense training has them.
    assert bool(jnp.all(state.last_step["emb"] == STEPS + CASES[name][3]))
    for field in ("nu", "mu", "nu_max"):
        ours, theirs = getattr(state.inner[0], field, None), getattr(dense_state[0], field, None)
        if ours is not None and theirs is not None and hasattr(theirs, "keys"):
            size = float(jnp.max(jnp.abs(theirs["emb"])))
            assert float(jnp.max(jnp.abs(ours["emb"] - theirs["emb"]))) <= TOLERANCE * size


def test_lazy_is_not_dense_here(trained):
    """The grid can fail: the lazy trajectory of the same data is far from dense Adam's."""
    ids, params, target = _data()
    tx = atx.adam(1e-2)

    @jax.jit
    def lazy(params):
        def body(carry, batch):
            p, s = carry
            step_ids, noise = batch
            g = atx.RowSparse(step_ids, _grads(p["emb"][step_ids], *batch, target), V)
            u, s = tx.update({"emb": g}, s, p)
            return (atx.sparse.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, tx.init(params)), ids)[0][0]

    dense_params = trained["adam"][1][0]
    scale = float(jnp.max(jnp.abs(dense_params["emb"])))
    assert float(jnp.max(jnp.abs(lazy(params)["emb"] - dense_params["emb"]))) > 100 * TOLERANCE * scale


def _reference_drift(b1, b2, eps, lr, wd, m, v, theta, s, k):
    """float64 NumPy: k zero-gradient AdamW steps (Kingma & Ba; Loshchilov & Hutter) from step s."""
    m, v, theta = (np.asarray(x, np.float64) for x in (m, v, theta))
    for tau in range(s + 1, s + k + 1):
        m, v = b1 * m, b2 * v
        m_hat, v_hat = m / (1 - b1**tau), v / (1 - b2**tau)
        theta = theta - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * theta)
    return theta


def _pair(x):
    """A float64 number (or array) as the (hi, lo) float32 pair a catch-up state keeps."""
    x = np.asarray(x, np.float64)
    hi = x.astype(np.float32)
    return jnp.asarray(np.stack([hi, (x - hi).astype(np.float32)], axis=-1))


def test_drift_error_is_below_float32_resolution_of_the_drift():
    """The Chebyshev/Clenshaw drift against a float64 loop of the skipped steps.

    Elements span z = b1 sqrt(v) / (b1 sqrt(v) + eps) over [0, 1] (sqrt(v) from 1e-11 to 1), rows
    span the gap k from 1 to past J = 214 and the last step s from 0 to count - 1, early (count
    300, where the bias corrections still move) and late (count 20,000). Measured: the largest
    error is 1e-6 of the row's largest drift (float32 arithmetic in the sums), not the
    interpolation's; the decay factor is exact to the rounding of its float32 exponent.
    """
    lr, wd, eps, b1, b2 = 1e-2, 0.1, 1e-8, 0.9, 0.999
    root = np.logspace(-11, 0, 48)
    m = np.where(np.arange(48) % 2, 1.0, -1.0) * 1e-2 * root
    tx = atx.sparse.catch_up(atx.adamw, lr, weight_decay=wd)
    table = jnp.ones((10, 48))
    log_step = np.log1p(-lr * wd)
    rows_of = jax.jit(lambda state: tx.rows(state, {"emb": table}, {"emb": jnp.arange(10)})["emb"])
    for count in (300, 20_000):
        gaps = [min(k, count) for k in (1, 2, 5, 30, 213, 214, 215, 299, 1000, 19_999)]
        state = tx.init({"emb": table})
        scaling = state.inner[0]._replace(
            count=jnp.int32(count),
            mu={"emb": jnp.asarray(np.tile(m, (10, 1)), jnp.float32)},
            nu={"emb": jnp.asarray(np.tile(root**2, (10, 1)), jnp.float32)},
        )
        state = state._replace(
            count=jnp.int32(count),
            inner=(scaling,) + tuple(state.inner[1:]),
            last_step={"emb": jnp.asarray([count - k for k in gaps], jnp.int32)},
            log_decay=_pair(count * log_step),
            decay_mark={"emb": jnp.stack([_pair((count - k) * log_step) for k in gaps])},
        )
        rows = rows_of(state)
        for r, k in enumerate(gaps):
            expected = _reference_drift(b1, b2, eps, lr, wd, m, root**2, 1.0, count - k, k)
            decay_only = (1 - lr * wd) ** k
            drift = expected - decay_only
            error = np.abs(np.asarray(rows[r], np.float64) - expected)
            # The decay exp(log P) is float32: its argument (up to lr wd k = 20) is rounded once.
            decay_error = (1 + k * lr * wd) * 2**-23 * abs(decay_only)
            assert np.all(error <= 2e-6 * np.abs(drift).max() + decay_error), (count, k)


def test_nnx_training_with_the_view_equals_dense_nnx():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, embed, rngs):
            self.embed = embed(V, D, rngs=rngs)

        def __call__(self, ids):
            return self.embed(ids).mean(1) @ jnp.arange(1.0, D + 1)

    def loss_fn(model, ids, y):
        return ((model(ids) - y) ** 2).mean()

    (ids, _), _, _ = _data()
    ids = ids[:200].reshape(100, 2, 4)
    ys = jnp.asarray(np.random.default_rng(1).normal(size=(100, 2)), jnp.float32)
    dense = Model(nnx.Embed, nnx.Rngs(0))
    dense_opt = nnx.Optimizer(dense, optax.adamw(0.05, weight_decay=0.1), wrt=nnx.Param)
    model = Model(atx.sparse.Embed, nnx.Rngs(0))
    opt = nnx.Optimizer(model, atx.sparse.catch_up(atx.adamw, 0.05, weight_decay=0.1), wrt=nnx.Param)

    @nnx.jit
    def steps(dense, dense_opt, model, opt):
        def body(carry, batch):
            dense, dense_opt, model, opt = carry
            _, g = nnx.value_and_grad(loss_fn)(dense, *batch)
            dense_opt.update(dense, g)
            view = opt.tx.view(nnx.as_pure(opt.opt_state))
            _, g = atx.sparse.value_and_grad(loss_fn, view=view)(model, *batch)
            opt.update(model, g)
            return (dense, dense_opt, model, opt), None

        return nnx.scan(body)((dense, dense_opt, model, opt), (ids, ys))

    steps(dense, dense_opt, model, opt)
    stale = model.embed.embedding[...]
    atx.sparse.flush(opt, model)
    expected = dense.embed.embedding[...]
    scale = float(jnp.max(jnp.abs(expected)))
    assert float(jnp.max(jnp.abs(model.embed.embedding[...] - expected))) <= TOLERANCE * scale
    assert float(jnp.max(jnp.abs(stale - expected))) > 100 * TOLERANCE * scale  # flush mattered


def test_refusals_name_the_cause_and_the_fix():
    with pytest.raises(ValueError, match="radam has no closed form"):
        atx.sparse.catch_up(atx.radam, 0.1)
    with pytest.raises(ValueError, match="adamax has no closed form"):
        atx.sparse.catch_up(atx.adamax, 0.1)
    with pytest.raises(ValueError, match="eps_root=1e-08"):
        atx.sparse.catch_up(atx.adam, 0.1, eps_root=1e-8)
    with pytest.raises(ValueError, match="weight-decay mask"):
        atx.sparse.catch_up(atx.adamw, 0.1, mask={"emb": True})
    with pytest.raises(ValueError, match="rho = b1/sqrt"):
        atx.sparse.catch_up(atx.adam, 0.1, b1=0.99, b2=0.9)
    with pytest.raises(ValueError, match="int8_blockwise"):
        atx.sparse.catch_up(atx.adam, 0.1, nu_dtype="int8_blockwise")
    tx = atx.sparse.catch_up(atx.adam, 0.1)
    params = {"emb": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match="needs the params"):
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match="no table"):
        tx.view(tx.init(params))(("other",), params["emb"], jnp.array([0]))
    from flax import nnx

    lazy = nnx.Optimizer(atx.sparse.Embed(3, 2, rngs=nnx.Rngs(0)), atx.adam(0.1), wrt=nnx.Param)
    with pytest.raises(TypeError, match="lazy ones are final"):
        atx.sparse.flush(lazy, None)


def test_a_dense_gradient_on_a_stale_table_catches_it_up_first():
    """Row-sparse steps, then dense ones on the same table: the dense step sees caught-up rows."""
    (ids, noise), params, target = _data()
    tx = atx.sparse.catch_up(atx.adamw, 1e-2, weight_decay=0.5)
    twin = optax.adamw(1e-2, weight_decay=0.5)

    def step(p, s, dp, ds, n, dense_leaf):
        g = atx.RowSparse(ids[n], _grads(p["emb"][ids[n]], ids[n], noise[n], target), V)
        u, s = tx.update({"emb": g.todense() if dense_leaf else g}, s, p)
        dense = jnp.zeros((V, D)).at[ids[n]].add(_grads(dp["emb"][ids[n]], ids[n], noise[n], target))
        du, ds = twin.update({"emb": dense}, ds, dp)
        return atx.sparse.apply_updates(p, u), s, optax.apply_updates(dp, du), ds

    step = jax.jit(step, static_argnums=5)
    carry = (params, tx.init(params), params, twin.init(params))
    for n in range(6):
        carry = step(*carry, n, n >= 3)
    p, _, dp, _ = carry
    scale = float(jnp.max(jnp.abs(dp["emb"])))
    assert float(jnp.max(jnp.abs(p["emb"] - dp["emb"]))) <= TOLERANCE * scale


def test_rows_tabulated_by_gap_match_a_float64_loop():
    """K = 1000 rows: the node values are tabulated per gap k <= J and the longest-gap rows
    computed one by one (15 % of gaps > J), or every row one by one (40 % > 1/4 of the rows):
    both against a float64 loop of the skipped AdamW steps with a warmup-cosine rate."""
    rng = np.random.default_rng(2)
    num, count, lr, wd, b1, b2, eps = 1000, 3000, _cosine(1e-2, 4000), 0.1, 0.9, 0.999, 1e-8
    rates = np.asarray(lr(jnp.arange(count + 1)), np.float64)  # float32 rates, as the steps use
    running = np.concatenate([[0.0], np.cumsum(np.log1p(-rates[:count] * wd))])
    tx = atx.sparse.catch_up(atx.adamw, lr, weight_decay=wd)
    table = jnp.ones((num, 2))
    rows_of = jax.jit(lambda st: tx.rows(st, {"emb": table}, {"emb": jnp.arange(num)})["emb"])
    for far in (0.15, 0.4):
        gaps = np.where(
            rng.random(num) < far, rng.integers(215, count, num), rng.integers(0, 215, num)
        )
        m = rng.normal(size=(num, 2)) * 1e-2
        v = m**2 * rng.uniform(0.1, 10, (num, 2))  # |m| / sqrt(v) within Adam's reach
        state = tx.init({"emb": table})
        scaling = state.inner[0]._replace(
            count=jnp.int32(count),
            mu={"emb": jnp.asarray(m, jnp.float32)},
            nu={"emb": jnp.asarray(v, jnp.float32)},
        )
        state = state._replace(
            count=jnp.int32(count),
            inner=(scaling,) + tuple(state.inner[1:]),
            last_step={"emb": jnp.asarray(count - gaps, jnp.int32)},
            log_decay=_pair(running[count]),
            decay_mark={"emb": _pair(running[count - gaps])},
        )
        rows = np.asarray(rows_of(state))
        theta, mm, vv = np.ones((num, 2)), m.copy(), v.copy()
        for tau in range(1, count + 1):  # each row's skipped steps s + 1 .. count, in float64
            active = (tau > count - gaps)[:, None]
            mm, vv = np.where(active, b1 * mm, mm), np.where(active, b2 * vv, vv)
            adam = mm / (1 - b1**tau) / (np.sqrt(vv / (1 - b2**tau)) + eps)
            theta = np.where(active, theta - rates[tau - 1] * (adam + wd * theta), theta)
        drift = np.abs(theta - np.exp(running[count] - running[count - gaps])[:, None])
        error = np.abs(rows - theta)
        # Measured: at most 4e-6 of the row (a long gap from an early step, whose decay and
        # drift are both evaluated in float32), within the 1e-5 dense training is held to above.
        assert np.all(error <= 2e-6 * drift.max(axis=1, keepdims=True) + 1e-5 * np.abs(theta))


def test_settled_long_gaps_share_the_tabulated_row():
    """Late in training (bias corrections exactly 1 in float32) with a constant rate and weight
    decay, a long-gap row takes the tabulated gap-J values; early long-gap rows are still summed
    one by one. Rows of both kinds, few and many of the early ones (each branch), against a
    float64 sum of the skipped AdamW steps."""
    rng = np.random.default_rng(3)
    num, count, lr, wd, b1, b2, eps = 1000, 25_000, 1e-3, 0.1, 0.9, 0.999, 1e-8
    tx = atx.sparse.catch_up(atx.adamw, lr, weight_decay=wd)
    step_log = float(np.log1p(-np.float64(np.float32(lr)) * wd))
    settled = tx._settled_step()
    assert 20_000 < settled < count - 3000
    table = jnp.ones((num, 2))
    rows_of = jax.jit(lambda st: tx.rows(st, {"emb": table}, {"emb": jnp.arange(num)})["emb"])
    for early in (0.0, 0.1, 0.4):
        kind = rng.random(num)
        gaps = np.where(
            kind < early,
            rng.integers(count - 12_000, count - 8000, num),  # 1 - b2^s is not 1 in float32
            np.where(kind < 0.6, rng.integers(215, 3000, num), rng.integers(0, 215, num)),
        )
        m = rng.normal(size=(num, 2)) * 1e-2
        v = m**2 * rng.uniform(0.1, 10, (num, 2))
        state = tx.init({"emb": table})
        scaling = state.inner[0]._replace(
            count=jnp.int32(count),
            mu={"emb": jnp.asarray(m, jnp.float32)},
            nu={"emb": jnp.asarray(v, jnp.float32)},
        )
        state = state._replace(
            count=jnp.int32(count),
            inner=(scaling,) + tuple(state.inner[1:]),
            last_step={"emb": jnp.asarray(count - gaps, jnp.int32)},
        )
        state = state._replace(
            log_decay=_pair(count * step_log), decay_mark={"emb": _pair((count - gaps) * step_log)}
        )
        rows = np.asarray(rows_of(state))
        # The skipped steps s + j in float64, j <= 1000: the terms fall like (b1/sqrt(b2))^j,
        # 1e-46 of the first at j = 1000.
        j = np.arange(1, 1001)[None, :, None]
        tau = (count - gaps)[:, None, None] + j
        adam = (b1**j * m[:, None]) / (1 - b1**tau)
        adam = adam / (np.sqrt(b2**j * v[:, None] / (1 - b2**tau)) + eps)
        later = np.exp((gaps[:, None, None] - j) * step_log)  # the decay after step s + j
        drift = -lr * np.sum(np.where(j <= gaps[:, None, None], adam * later, 0.0), axis=1)
        theta = np.exp(gaps * step_log)[:, None] + drift
        scale = np.abs(drift).max(axis=1, keepdims=True)
        assert np.all(np.abs(rows - theta) <= 2e-6 * scale + 1e-6 * np.abs(theta)), early


HLO_ROWS = 4099  # a row count no other dimension of the step has


def _table_sized_ops(hlo: str, num_rows: int) -> list[str]:
    """The instructions of the entry computation that produce a ``num_rows``-row array and are
    neither a parameter nor an (in-place) scatter: copies, selects, fusions over the table."""
    instruction = re.compile(r"%\S+ = (\([^)]*\)|\S+) ([\w-]+)\(")
    roots, name, entry = {}, None, []
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            name = "ENTRY" if line.startswith("ENTRY") else line.split()[0].lstrip("%")
            continue
        match = instruction.search(line)
        if match is None:
            continue
        if " ROOT " in line:
            roots[name] = match.group(2)
        if name == "ENTRY":
            entry.append((match.group(1), match.group(2), line))
    bad = []
    for shape, op, line in entry:
        allowed = op in ("parameter", "tuple", "bitcast", "scatter")
        if allowed or not re.search(rf"\[{num_rows}[,\]]", shape):
            continue
        called = re.search(r"calls=%([\w.-]+)", line)
        if op == "fusion" and called and roots.get(called.group(1)) == "scatter":
            continue
        bad.append(line.strip()[:160])
    return bad


@pytest.mark.parametrize(
    "alias, kwargs",
    [(atx.adamw, dict(weight_decay=0.1)), (atx.rmsprop, dict(momentum=0.9))],
    ids=["adamw", "rmsprop-momentum"],
)
def test_read_and_update_touch_no_table_sized_array(alias, kwargs):
    # A donated step (forward read through `rows`, then the update) writes the table and its
    # state in place: no copy of a table, last step or mark vector (O(V) a step).
    tx = atx.sparse.catch_up(alias, 1e-2, **kwargs)
    params = {"emb": jnp.zeros((HLO_ROWS, D))}
    state = tx.init(params)

    def step(params, state, ids):
        rows = tx.rows(state, params, {"emb": ids})["emb"]
        g = {"emb": atx.RowSparse(ids, rows - 1.0, HLO_ROWS)}
        updates, state = tx.update(g, state, params)
        return atx.sparse.apply_updates(params, updates), state

    ids = jnp.arange(K, dtype=jnp.int32)
    step = jax.jit(step, donate_argnums=(0, 1), compiler_options=DEFAULT_CODEGEN)
    hlo = step.lower(params, state, ids).compile().as_text()
    assert _table_sized_ops(hlo, HLO_ROWS) == []
    assert "scatter" in hlo  # the parser sees the writes it allows


def _nested(table_tx):
    """`table_tx` nested two ways: last in a clipping chain, and as the table's group of an
    ``optax.partition`` (the dense leaf "w" gets plain adamw) inside `skip_nonfinite`."""
    label = lambda tree: {"emb": "table", "w": "rest"}  # noqa: E731
    groups = {"table": table_tx, "rest": atx.adamw(1e-2, weight_decay=0.5)}
    return {
        "chain": optax.chain(atx.sparse.clip_by_global_norm(1.0), table_tx),
        "partition": atx.skip_nonfinite(
            optax.chain(atx.sparse.clip_by_global_norm(1.0), optax.partition(groups, label))
        ),
    }


def test_rows_view_flush_find_the_state_nested_in_a_chain_and_a_partition():
    """`rows`, `view` and `flush` take the whole optimizer state; trained through them, a table
    in a chain or in an ``optax.partition`` group ends on dense optax's clip + adamw trajectory."""
    (ids, noise), params, target = _data()
    steps = 300
    params = {**params, "w": jnp.full((D,), 2.0)}
    tx = atx.sparse.catch_up(atx.adamw, 1e-2, weight_decay=0.5)
    nested = _nested(tx)
    twin = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=0.5))

    def step(carry, batch):
        i, n = batch
        states, twin_params, twin_state = carry
        new = {}
        for name, (p, s) in states.items():
            rows = tx.rows(s, p, {"emb": i, "w": None})["emb"]
            view = tx.view(s)(("emb",), p["emb"], i)
            g = {"emb": atx.RowSparse(i, _grads(rows, i, n, target), V), "w": p["w"] - 1.0}
            u, s = nested[name].update(g, s, p)
            new[name] = (atx.sparse.apply_updates(p, u), s, jnp.max(jnp.abs(view - rows)))
        dense = jnp.zeros((V, D)).at[i].add(_grads(twin_params["emb"][i], i, n, target))
        u, twin_state = twin.update(
            {"emb": dense, "w": twin_params["w"] - 1.0}, twin_state, twin_params
        )
        states = {k: v[:2] for k, v in new.items()}
        carry = (states, optax.apply_updates(twin_params, u), twin_state)
        return carry, {k: v[2] for k, v in new.items()}

    @jax.jit
    def run():
        states = {name: (params, t.init(params)) for name, t in nested.items()}
        carry, view_gap = jax.lax.scan(
            step, (states, params, twin.init(params)), (ids[:steps], noise[:steps])
        )
        flushed = {name: tx.flush(s, p) for name, (p, s) in carry[0].items()}
        return flushed, carry[0], carry[1], view_gap

    flushed, trained, expected, view_gap = run()
    scale = float(jnp.max(jnp.abs(expected["emb"])))
    for name, (p, s) in flushed.items():
        assert float(jnp.max(view_gap[name])) == 0.0, name  # view and rows read the same rows
        assert jax.tree.structure(s) == jax.tree.structure(trained[name][1]), name
        last = atx.sparse._catch_up.find_state(s, "test").last_step["emb"]
        assert bool(jnp.all(last == steps)), name
        for leaf in ("emb", "w"):
            gap = float(jnp.max(jnp.abs(p[leaf] - expected[leaf])))
            assert gap <= TOLERANCE * scale, (name, leaf, gap)
        np.testing.assert_array_equal(p["w"], trained[name][0]["w"])  # flush leaves w as it is
    stale = float(jnp.max(jnp.abs(trained["partition"][0]["emb"] - expected["emb"])))
    assert stale > 100 * TOLERANCE * scale  # the flush mattered


def test_a_state_with_no_or_two_catch_up_states_is_refused():
    tx = atx.sparse.catch_up(atx.adam, 0.1)
    params = {"emb": jnp.ones((3, 2)), "w": jnp.ones(2)}
    with pytest.raises(ValueError, match="no CatchUpState in the optimizer state"):
        tx.view(atx.adam(0.1).init(params))
    other = atx.sparse.catch_up(atx.adam, 0.2)
    both = optax.partition({"a": tx, "b": other}, {"emb": "a", "w": "b"})
    with pytest.raises(ValueError, match="holds 2 CatchUpStates"):
        tx.flush(both.init(params), params)
    with pytest.raises(ValueError, match="a leaf this catch_up does not update"):
        tx.rows(_nested(tx)["partition"].init(params), params, {"emb": None, "w": jnp.array([0])})
    from flax import nnx

    embed = atx.sparse.Embed(3, 2, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(embed, optax.chain(atx.sparse.clip_by_global_norm(1.0), tx), wrt=nnx.Param)
    with pytest.raises(TypeError, match="which holds a sparse.catch_up"):
        atx.sparse.flush(opt, embed)
    atx.sparse.flush(opt, embed, tx=tx)  # the catch_up inside the chain named: flushed
    assert opt.opt_state[-1].last_step["embedding"][...].tolist() == [0, 0, 0]
