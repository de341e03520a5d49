"""Row-sparse gradients: RowSparse, the row path of every rule, lazy and dense semantics, bad indices.

References: dense optax (Adagrad exactly; every alias with the untouched rows held back for the lazy
semantics), torch.optim.SparseAdam, a float64 NumPy row-wise Adagrad, numpy's np.add.at for the
dense meaning of a row-sparse gradient, and nnx.value_and_grad for the gradients of a model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import adaptive_tx as atx
from adaptive_tx import sparse
from tests.cases import (
    DEFAULTS,
    PARITY_FLOOR,
    REFUSES_ROWS,
    case_id,
    gradient_stream,
    make_params,
    max_rel_diff,
    run,
    twin,
)
from tests.reference import numpy_optimizers as ref

ROWS, DIM = 10, 3  # the shape of make_params()["emb"]
# Rows 0-2 common, 3-8 rare, row 9 never looked up; K = 5 lookups a step, duplicates included.
ROW_P = np.array([0.3, 0.25, 0.2] + [0.25 / 6] * 6 + [0.0])


def dense_of(indices, values, num_rows):
    """The dense meaning of a row-sparse gradient, by numpy (independent of RowSparse.todense)."""
    dense = np.zeros((num_rows,) + values.shape[1:], values.dtype)
    np.add.at(dense, indices, values)
    return dense


def sparse_stream(steps: int, seed: int = 3, lookups: int = 5):
    """Mixed gradients: dense "w", "b" (tests.cases.gradient_stream) and a row-sparse "emb".

    Returns (row-sparse gradients, their dense twins, the rows touched at each step).
    """
    rng = np.random.default_rng(seed)
    row_sparse, dense, touched = [], [], []
    for t, g in enumerate(gradient_stream(steps, seed=seed)):
        indices = rng.choice(ROWS, size=lookups, p=ROW_P).astype(np.int32)
        # Dyadic values: sums of repeated rows are exact in any order, so the dense twin (numpy's
        # order) and the coalesced rows (XLA's order) hold the very same gradient.
        values = np.round(rng.normal(size=(lookups, DIM)) * 256) / 256
        values = (values * (128.0 if t >= steps // 2 else 1.0)).astype(np.float32)
        row_sparse.append({**g, "emb": atx.RowSparse(indices, values, ROWS)})
        dense.append({**g, "emb": dense_of(indices, values, ROWS)})
        touched.append(np.isin(np.arange(ROWS), indices))
    return row_sparse, dense, touched


def lazy_reference(tx, params, grads, touched):
    """`tx` (optax) on dense gradients, with every row not touched at a step held back.

    The parameters and every state leaf of the "emb" table keep their old rows where the row was
    not looked up: the lazy semantics, with optax doing all the arithmetic.
    """

    def hold(path, new, old):
        in_table = any(getattr(k, "key", None) == "emb" for k in path)
        return jnp.where(touched_rows[:, None], new, old) if in_table and new.ndim == 2 else new

    @jax.jit
    def step(params, state, g, rows):
        nonlocal touched_rows
        touched_rows = rows
        updates, new_state = tx.update(g, state, params)
        new_params = optax.apply_updates(params, updates)
        return (
            jax.tree_util.tree_map_with_path(hold, new_params, params),
            jax.tree_util.tree_map_with_path(hold, new_state, state),
        )

    touched_rows = None
    state, iterates = tx.init(params), []
    for g, rows in zip(grads, touched):
        params, state = step(params, state, g, rows)
        iterates.append(params)
    return iterates


# ----------------------------------------------------------------------------- RowSparse itself


def test_todense_sums_duplicates_like_numpy():
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 6, size=20).astype(np.int32)
    values = rng.normal(size=(20, 2, 3)).astype(np.float32)
    g = atx.RowSparse(indices, values, 6)
    assert g.shape == (6, 2, 3) and g.dtype == jnp.float32
    np.testing.assert_allclose(g.todense(), dense_of(indices, values, 6), rtol=1e-6, atol=1e-6)
    coalesced = g.coalesce()
    distinct = np.unique(indices)
    np.testing.assert_array_equal(coalesced.indices[: distinct.size], distinct)
    assert np.all(np.asarray(coalesced.indices[distinct.size :]) == 6)  # empty slots
    np.testing.assert_array_equal(coalesced.values[distinct.size :], 0.0)
    np.testing.assert_array_equal(coalesced.todense(), g.todense())


def test_empty_row_sparse_and_jit_roundtrip():
    empty = atx.RowSparse(jnp.zeros(0, jnp.int32), jnp.zeros((0, 4)), 3)
    np.testing.assert_array_equal(empty.todense(), np.zeros((3, 4)))
    g = atx.RowSparse([2, 0], jnp.ones((2, 4)), 3)
    out = jax.jit(lambda x: x.with_values(2 * x.values))(g)
    assert isinstance(out, atx.RowSparse) and out.num_rows == 3
    np.testing.assert_array_equal(out.todense()[:, 0], [2.0, 0.0, 2.0])


def test_dense_plus_row_sparse_is_the_dense_sum():
    g = atx.RowSparse([1, 1, 3], np.arange(6, dtype=np.float32).reshape(3, 2), 4)
    base = np.arange(8, dtype=np.float32).reshape(4, 2)
    expected = base + dense_of(np.array([1, 1, 3]), np.arange(6.0).reshape(3, 2), 4)
    np.testing.assert_array_equal(jnp.asarray(base) + g, expected)
    np.testing.assert_array_equal(base + g, expected)  # numpy defers to RowSparse.__radd__
    np.testing.assert_array_equal(optax.apply_updates({"e": base}, {"e": g})["e"], expected)
    with pytest.raises(ValueError, match=r"shape \(4, 2\) to an array of shape \(5, 2\)"):
        jnp.zeros((5, 2)) + g


@pytest.mark.parametrize(
    "args, error, match",
    [
        (([0.5], [[1.0]], 3), TypeError, "indices must be a 1-d integer array, got float32"),
        (([[0]], [[1.0]], 3), TypeError, r"of shape \(1, 1\)"),
        (([0, 1], [[1.0]], 3), ValueError, r"one row per index \(2\), got shape \(1, 1\)"),
        (([0], [[1]], 3), TypeError, "values must be floating, got int32"),
        (([0], [[1.0]], 3.0), TypeError, "num_rows must be an int, got num_rows=3.0"),
        (([0], [[1.0]], -1), ValueError, "num_rows must be in .*, got num_rows=-1"),
    ],
)
def test_bad_row_sparse_construction(args, error, match):
    with pytest.raises(error, match=match):
        atx.RowSparse(*args)


# ------------------------------------------------------------------ the rules on row-sparse leaves


@pytest.mark.parametrize("kwargs", [{}, {"initial_accumulator_value": 0.0, "eps": 0.0}])
def test_adagrad_row_sparse_equals_dense_optax_exactly(kwargs):
    """The accumulators bitwise; the parameters to the rounding of the final multiply-add.

    (XLA may contract ``p - lr * u`` into one fused multiply-add in one program and not in the
    other; Adagrad's update does not depend on the parameters, so these ulps do not grow.)
    """
    row_sparse, dense, touched = sparse_stream(60)
    params = make_params()
    ours, our_state, traces = run(atx.adagrad(0.1, **kwargs), params, row_sparse)
    theirs, their_state, _ = run(optax.adagrad(0.1, **kwargs), params, dense)
    assert traces == 1
    np.testing.assert_array_equal(
        our_state[0].sum_of_squares["emb"], their_state[0].sum_of_squares["emb"]
    )
    for a, b in zip(ours, theirs):  # parameters of size ~1: a few float32 ulps over 60 steps
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=1e-6), a, b)
    never = ~np.any(touched, axis=0)
    assert never.sum() >= 1  # row 9
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a["emb"][never], params["emb"][never])
        np.testing.assert_array_equal(b["emb"][never], params["emb"][never])


LAZY_ROWS = DEFAULTS + [
    (
        "adamw",
        {"learning_rate": 0.01, "weight_decay": 0.1, "mask": lambda p: {k: k != "b" for k in p}},
    ),
    ("rmsprop", {"learning_rate": 0.01, "centered": True, "initial_scale": 1.0}),
    ("adam", {"learning_rate": 0.01, "nesterov": True, "eps_root": 1e-8}),
]


@pytest.mark.parametrize("row", LAZY_ROWS, ids=case_id)
def test_lazy_semantics_equal_optax_with_untouched_rows_held_back(row):
    name, kwargs = row
    row_sparse, dense, touched = sparse_stream(40)
    params = make_params()
    if name in REFUSES_ROWS:  # a per-leaf norm: the error names the transformation and the fix
        match = rf"{REFUSES_ROWS[name]}.*prepare_rows"
        with pytest.raises(TypeError, match=match):
            run(getattr(atx, name)(**kwargs), params, row_sparse[:1])
        fixed = optax.chain(sparse.prepare_rows(lazy=False), getattr(atx, name)(**kwargs))
        ours, _, _ = run(fixed, params, row_sparse[:5])
        theirs, _, _ = run(getattr(optax, name)(**kwargs), params, dense[:5])
        assert max_rel_diff(ours, theirs) <= 1e-5  # the fix named: the dense (optax) step
        return
    ours, _, traces = run(getattr(atx, name)(**kwargs), params, row_sparse)
    theirs = lazy_reference(twin(name)(**kwargs), params, dense, touched)
    assert traces == 1
    assert max_rel_diff(ours, theirs, PARITY_FLOOR.get(name, 1e-3)) <= 1e-5
    assert max_rel_diff(ours[-1]["emb"], params["emb"]) > 1e-2  # the table did move


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adamw"])
def test_prepare_rows_lazy_false_gives_the_dense_optax_result(name):
    row_sparse, dense, _ = sparse_stream(30)
    params = make_params()
    tx = optax.chain(atx.sparse.prepare_rows(lazy=False), getattr(atx, name)(0.01))
    ours, _, _ = run(tx, params, row_sparse)
    theirs, _, _ = run(twin(name)(0.01), params, dense)
    assert max_rel_diff(ours, theirs) <= 1e-5
    # and it differs from the lazy result: the moments of untouched rows keep moving them
    lazy, _, _ = run(getattr(atx, name)(0.01), params, row_sparse)
    if name != "rmsprop":  # RMSProp's direction is g: untouched rows stay put either way
        assert max_rel_diff(lazy[-1]["emb"], ours[-1]["emb"]) > 1e-3


def test_prepare_rows_lazy_true_changes_nothing_but_the_sorting():
    row_sparse, _, _ = sparse_stream(20)
    params = make_params()
    plain, _, _ = run(atx.adam(0.01), params, row_sparse)
    prepared, state, _ = run(
        optax.chain(atx.sparse.prepare_rows(), atx.adam(0.01)), params, row_sparse
    )
    assert max_rel_diff(plain, prepared) <= 1e-6
    assert int(state[0].dropped_rows) == 0


def test_lazy_adam_equals_torch_sparse_adam_over_100_steps():
    rng = np.random.default_rng(7)
    num_rows, dim, lookups = 50, 4, 12
    table = rng.normal(size=(num_rows, dim)).astype(np.float32)
    torch_table = torch.nn.Parameter(torch.tensor(table))
    torch_opt = torch.optim.SparseAdam([torch_table], lr=1e-2)
    tx = atx.adam(1e-2)
    params, state = jnp.asarray(table), tx.init(jnp.asarray(table))

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return atx.sparse.apply_updates(params, updates), state

    # Relative to the table's largest entry: optax's (and so our) float32 bias corrections differ
    # from torch's float64 ones by ~1e-5 relative at every step (see rule.bias_correction), an
    # absolute drift of ~1e-6 over 100 steps that elementwise ratios would blow up near zero.
    errors = []
    for _ in range(100):
        indices = rng.zipf(1.5, size=lookups).clip(max=num_rows) - 1  # Zipf: repeats, rare rows
        values = rng.normal(size=(lookups, dim)).astype(np.float32)
        torch_table.grad = torch.sparse_coo_tensor(
            torch.tensor(indices)[None], torch.tensor(values), (num_rows, dim)
        )
        torch_opt.step()
        params, state = step(params, state, atx.RowSparse(indices, values, num_rows))
        expected = torch_table.detach().numpy()
        errors.append(np.abs(params - expected).max() / np.abs(expected).max())
    assert np.max(errors) <= 1e-4  # a NaN fails too
    assert max_rel_diff(params, table) > 1e-2


def test_rowwise_adagrad_matches_float64_reference():
    rng = np.random.default_rng(1)
    params = rng.normal(size=(12, 5)).astype(np.float32)
    grads = []
    for t in range(100):
        g = rng.normal(size=(12, 5)) * (100.0 if t >= 50 else 1.0)
        g[rng.random(12) < 0.6] = 0.0  # most rows untouched at each step
        g[11] = 0.0  # a row never touched: its accumulator stays 0 (the G > 0 branch)
        grads.append(g.astype(np.float32))
    expected = ref.run_rowwise_adagrad(params, grads, 0.05, initial_accumulator_value=0.0, eps=1e-7)
    tx = atx.rowwise_adagrad(0.05, initial_accumulator_value=0.0, eps=1e-7)
    dense_iterates, state, _ = run(tx, jnp.asarray(params), grads)
    assert state[0].sum_of_squares.shape == (12, 1)  # V floats, not V x D
    assert max_rel_diff(dense_iterates, expected) <= 1e-5
    # The same gradients as rows (only the nonzero rows): the dense result, up to the summation
    # order of the row means (XLA vectorizes the reduction over K rows and over V rows differently).
    rows = [atx.RowSparse(np.flatnonzero(g.any(1)), g[g.any(1)], 12) for g in grads]
    row_iterates, _, _ = run(tx, jnp.asarray(params), rows)
    for a, b in zip(row_iterates, dense_iterates):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(row_iterates[-1][11], params[11])


def test_rowwise_state_shape_mismatch_names_the_leaf():
    tx = atx.scale_by_rowwise_sum_of_squares()
    state = tx.init({"emb": jnp.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"\['emb'\] has shape \(5, 3\).*expected \(5, 1\)"):
        tx.update({"emb": jnp.zeros((5, 3))}, state)


def test_duplicates_are_summed_before_the_rule():
    tx = atx.adam(0.1)
    params = jnp.zeros((4, 2))
    twice = atx.RowSparse([2, 2, 0], jnp.array([[1.0, -1.0], [2.0, 0.5], [0.0, 1.0]]), 4)
    once = atx.RowSparse([0, 2], jnp.array([[0.0, 1.0], [3.0, -0.5]]), 4)
    for g1, g2 in [(twice, once)]:
        u1, s1 = tx.update(g1, tx.init(params), params)
        u2, s2 = tx.update(g2, tx.init(params), params)
        np.testing.assert_array_equal(u1.todense(), u2.todense())
        jax.tree.map(np.testing.assert_array_equal, s1, s2)


def test_weight_decay_decays_each_touched_row_once():
    params = {"emb": jnp.ones((3, 2))}
    g = {"emb": atx.RowSparse([1, 1], jnp.zeros((2, 2)), 3)}
    tx = atx.add_decoupled_weight_decay(0.5)
    updates, _ = tx.update(g, tx.init(params), params)
    np.testing.assert_array_equal(updates["emb"].todense(), [[0, 0], [0.5, 0.5], [0, 0]])


def test_chain_with_clipping_and_inject_hyperparams():
    row_sparse, dense, touched = sparse_stream(20)
    params = make_params()
    ours = optax.chain(
        atx.sparse.clip_by_global_norm(1.0), optax.inject_hyperparams(atx.adam)(learning_rate=0.01)
    )
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.01))
    ours_it, _, traces = run(ours, params, row_sparse)
    theirs_it = lazy_reference(theirs, params, dense, touched)
    # The global norm sums the rows, optax the dense table with its zeros: a different order, so
    # the clip factor differs by an ulp at each step, and Adam's moments mix those factors.
    assert traces == 1 and max_rel_diff(ours_it, theirs_it) <= 1e-4


@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clipped", "unclipped"])
def test_clip_by_global_norm_matches_optax_on_the_dense_tree(max_norm):
    row_sparse, dense, _ = sparse_stream(3)
    ours, _ = jax.jit(atx.sparse.clip_by_global_norm(max_norm).update)(row_sparse[2], None)
    theirs, _ = optax.clip_by_global_norm(max_norm).update(dense[2], None)
    ours = jax.tree.map(
        lambda x: x.todense() if sparse.is_row_sparse(x) else x, ours, is_leaf=sparse.is_row_sparse
    )
    assert max_rel_diff(ours, theirs, floor=1e-6) <= 1e-6
    with pytest.raises(ValueError, match="max_norm must be >= 0, got max_norm=-1"):
        atx.sparse.clip_by_global_norm(-1)


def test_bf16_rows_keep_their_dtype():
    params = {"emb": jnp.ones((5, 2), jnp.bfloat16)}
    g = {"emb": atx.RowSparse([4], jnp.ones((1, 2), jnp.bfloat16), 5)}
    tx = atx.adamw(0.1)
    updates, _ = jax.jit(tx.update)(g, tx.init(params), params)
    new = atx.sparse.apply_updates(params, updates)
    assert updates["emb"].dtype == jnp.bfloat16 and new["emb"].dtype == jnp.bfloat16
    assert float(new["emb"][4, 0]) < 1.0 and float(new["emb"][3, 0]) == 1.0


# ------------------------------------------------------------------------------------ bad indices

CONSUMERS = {
    "ScaleByBiasCorrectedMoments": lambda g, p: atx.adam(0.1).update(g, atx.adam(0.1).init(p), p),
    "prepare_rows": lambda g, p: atx.sparse.prepare_rows().update(g, None),
    "clip_by_global_norm": lambda g, p: atx.sparse.clip_by_global_norm(1.0).update(g, None),
    "AddDecoupledWeightDecay": lambda g, p: atx.add_decoupled_weight_decay(0.1).update(
        g, atx.add_decoupled_weight_decay(0.1).init(p), p
    ),
    "apply_updates": lambda g, p: atx.sparse.apply_updates(p, g),
}


@pytest.mark.parametrize("bad", [10, -1], ids=["too_large", "negative"])
@pytest.mark.parametrize("where", sorted(CONSUMERS))
def test_bad_index_outside_jit_raises_index_error_naming_leaf_and_index(where, bad):
    params = {"w": jnp.ones(2), "emb": jnp.ones((ROWS, DIM))}
    g = {"w": jnp.ones(2), "emb": atx.RowSparse([3, bad, 4], jnp.ones((3, DIM)), ROWS)}
    message = rf"{where}: row-sparse leaf \['emb'\] has row index {bad} \(at position 1\)"
    with pytest.raises(IndexError, match=message):
        CONSUMERS[where](g, params)
    with pytest.raises(IndexError, match=rf"todense has row index {bad}"):
        g["emb"].todense()


def test_bad_indices_inside_jit_are_dropped_and_counted():
    params = make_params()
    tx = optax.chain(atx.sparse.prepare_rows(), atx.adamw(0.1, weight_decay=0.1))
    values = jnp.arange(1.0, 5.0)[:, None] * jnp.ones((4, DIM))

    @jax.jit
    def step(params, state, indices, values):
        g = {"w": jnp.ones((6, 4)), "b": jnp.ones(4), "emb": atx.RowSparse(indices, values, ROWS)}
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    # -1 would wrap to row 9 and 10 would clamp to row 9 in plain JAX indexing.
    bad_params, bad_state = step(params, tx.init(params), jnp.array([2, -1, 10, 5]), values)
    good_params, _ = step(params, tx.init(params), jnp.array([2, 5]), values[jnp.array([0, 3])])
    jax.tree.map(np.testing.assert_array_equal, bad_params, good_params)
    np.testing.assert_array_equal(bad_params["emb"][9], params["emb"][9])
    assert int(bad_state[0].dropped_rows) == 2
    _, bad_state = step(bad_params, bad_state, jnp.array([-5, 1, 2, 3]), values)
    assert int(bad_state[0].dropped_rows) == 3


def test_row_sparse_of_the_wrong_table_size_names_the_leaf():
    params = {"emb": jnp.zeros((ROWS, DIM))}
    tx = atx.adam(0.1)
    g = {"emb": atx.RowSparse([0], jnp.ones((1, DIM)), ROWS + 1)}
    with pytest.raises(ValueError, match=r"\['emb'\] has shape \(11, 3\) but the optimizer state"):
        tx.update(g, tx.init(params), params)


# ---------------------------------------------------------------------------- flax.nnx, memory


class BagOfWords(nnx.Module):
    def __init__(self, vocab: int, dim: int, *, embed=atx.sparse.Embed, rngs: nnx.Rngs):
        self.embed = embed(vocab, dim, rngs=rngs)
        self.norm = nnx.BatchNorm(dim, rngs=rngs)
        self.out = nnx.Linear(dim, 2, rngs=rngs)

    def __call__(self, tokens, extra=None):
        h = self.embed(tokens).mean(axis=1)
        if extra is not None:  # a second lookup of the same table
            h = h + self.embed(extra).sum(axis=1)
        return self.out(self.norm(h))


def loss_fn(model, tokens, labels, extra=None):
    logits = model(tokens, extra)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


def test_value_and_grad_equals_nnx_value_and_grad():
    tokens = jnp.array([[1, 5, 5, 0], [7, 1, 2, 2], [3, 3, 3, 9]])
    labels, extra = jnp.array([0, 1, 1]), jnp.array([[4], [5], [4]])
    model = BagOfWords(12, 4, rngs=nnx.Rngs(0))
    twin = nnx.clone(model)
    (loss, logits), grads = atx.sparse.value_and_grad(loss_fn, has_aux=True)(
        model, tokens, labels, extra=extra
    )
    (loss2, logits2), grads2 = nnx.value_and_grad(loss_fn, has_aux=True)(
        twin, tokens, labels, extra=extra
    )
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(logits, logits2, rtol=1e-6)
    table_grad = grads["embed"]["embedding"].get_value()
    assert isinstance(table_grad, atx.RowSparse) and table_grad.values.shape == (15, 4)
    np.testing.assert_allclose(
        table_grad.todense(), grads2["embed"]["embedding"].get_value(), rtol=1e-5, atol=1e-7
    )
    for path in [("out", "kernel"), ("norm", "scale")]:
        np.testing.assert_allclose(
            grads[path[0]][path[1]].get_value(), grads2[path[0]][path[1]].get_value(), rtol=1e-5
        )
    # the batch statistics were written back, as nnx.value_and_grad writes them
    np.testing.assert_allclose(model.norm.mean.get_value(), twin.norm.mean.get_value(), rtol=1e-6)


def test_nnx_optimizer_with_row_sparse_grads_equals_dense_adagrad():
    tokens = jax.random.randint(jax.random.key(0), (8, 5), 0, 30)
    labels = jnp.arange(8) % 2
    model = BagOfWords(30, 4, rngs=nnx.Rngs(1))
    twin = nnx.clone(model)
    opt = nnx.Optimizer(model, atx.adagrad(0.5), wrt=nnx.Param)
    opt2 = nnx.Optimizer(twin, optax.adagrad(0.5), wrt=nnx.Param)

    @nnx.jit
    def sparse_step(model, opt, tokens, labels):
        _, grads = atx.sparse.value_and_grad(loss_fn, has_aux=True)(model, tokens, labels)
        opt.update(model, grads)

    @nnx.jit
    def dense_step(model, opt, tokens, labels):
        _, grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, tokens, labels)
        opt.update(model, grads)

    for t in range(5):
        sparse_step(model, opt, jnp.roll(tokens, t), labels)
        dense_step(twin, opt2, jnp.roll(tokens, t), labels)
    table, table2 = model.embed.embedding.get_value(), twin.embed.embedding.get_value()
    np.testing.assert_allclose(table, table2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(table, BagOfWords(30, 4, rngs=nnx.Rngs(1)).embed.embedding.get_value())


def test_reading_the_table_densely_inside_value_and_grad_raises():
    model = BagOfWords(12, 4, rngs=nnx.Rngs(0))
    penalty = lambda m, tokens: m(tokens).sum() + (m.embed.embedding[...] ** 2).sum()
    with pytest.raises(TypeError, match="was read as a dense array"):
        atx.sparse.value_and_grad(penalty)(model, jnp.array([[1, 2]]))


def test_no_table_sized_gradient_buffer_in_the_compiled_step():
    """Compiled memory: the row-sparse step allocates no V x D temporary; the dense one does."""
    vocab, dim = 50_000, 16
    table_bytes = vocab * dim * 4
    model = BagOfWords(vocab, dim, rngs=nnx.Rngs(0))
    tx = atx.adam(1e-3)
    tokens, labels = jnp.zeros((16, 8), jnp.int32), jnp.zeros(16, jnp.int32)

    def temp_bytes(grad_fn, embed):
        model = BagOfWords(vocab, dim, embed=embed, rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def step(params, opt_state, rest, tokens, labels):
            model = nnx.merge(graphdef, params, rest)
            _, grads = grad_fn(loss_fn, has_aux=True)(model, tokens, labels)
            grads = nnx.as_pure(grads)
            updates, opt_state = tx.update(grads, opt_state, params)
            return atx.sparse.apply_updates(params, updates), opt_state

        params = nnx.as_pure(params)
        compiled = (
            jax.jit(step, donate_argnums=(0, 1))
            .lower(params, tx.init(params), rest, tokens, labels)
            .compile()
        )
        return compiled.memory_analysis().temp_size_in_bytes

    del model
    assert temp_bytes(atx.sparse.value_and_grad, atx.sparse.Embed) < table_bytes / 10
    assert temp_bytes(nnx.value_and_grad, nnx.Embed) >= table_bytes  # the test can fail


@pytest.mark.parametrize("row", [r for r in DEFAULTS if r[0] in ("adagrad", "adam")], ids=case_id)
def test_rows_with_all_tree_shapes(row):
    """3-d tables, a scalar dense leaf and an empty row set go through one update."""
    params = {"t": jnp.ones((4, 2, 3)), "s": jnp.ones(())}
    g = {"t": atx.RowSparse([3], jnp.ones((1, 2, 3)), 4), "s": jnp.ones(())}
    empty = {
        "t": atx.RowSparse(jnp.zeros(0, jnp.int32), jnp.zeros((0, 2, 3)), 4),
        "s": jnp.ones(()),
    }
    tx = getattr(atx, row[0])(**row[1])
    for grads in (g, empty):
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        new = atx.sparse.apply_updates(params, updates)
        assert new["t"].shape == (4, 2, 3)
        np.testing.assert_array_equal(new["t"][:3], 1.0)


def test_row_sparse_validates_its_arguments():
    with pytest.raises(TypeError, match="indices must be a 1-d integer array, got float32"):
        atx.RowSparse(jnp.array([0.5]), jnp.ones((1, DIM)), ROWS)
    with pytest.raises(TypeError, match="indices must be a 1-d integer array"):
        atx.RowSparse(jnp.zeros((2, 2), jnp.int32), jnp.ones((2, DIM)), ROWS)


def test_row_sparse_with_8bit_moments_moves_only_the_touched_rows():
    """8-bit codes and their per-row block scales are gathered and scattered by row."""
    params = {"emb": jnp.ones((64, 256))}  # >= 4096 elements: quantized
    tx = atx.adam(0.1, mu_dtype="int8_blockwise", nu_dtype="int8_blockwise")
    state = tx.init(params)
    g = {"emb": atx.RowSparse([3, 7], jnp.ones((2, 256)), 64)}
    updates, new_state = jax.jit(tx.update)(g, state, params)
    new = atx.sparse.apply_updates(params, updates)
    moved = np.flatnonzero(np.any(np.asarray(new["emb"]) != 1.0, axis=1))
    np.testing.assert_array_equal(moved, [3, 7])
    codes = np.asarray(new_state[0].mu.codes["emb"])
    assert np.all(codes[[0, 1, 2, 4, 5, 6, 8]] == np.asarray(state[0].mu.codes["emb"])[0])
    np.testing.assert_allclose(new["emb"][3], 1.0 - 0.1, rtol=1e-3)  # Adam's first step: lr


def test_row_sparse_refuses_factored_statistics():
    params = {"emb": jnp.ones((256, 256))}
    tx = atx.adam(0.1, nu_dtype=atx.Factored())
    g = {"emb": atx.RowSparse([3], jnp.ones((1, 256)), 256)}
    with pytest.raises(
        TypeError, match="cannot update factored or per-block statistics row by row"
    ):
        tx.update(g, tx.init(params), params)
