"""Row-sparse leaves with what users chain around them: optax's transforms (the compatibility
table of docs/row_sparse.md, as a grid over leaf shapes and dtypes), gradient accumulation,
parameter groups, and the indices' contract (never reinterpreted, never wrapped).

References: dense optax on the dense gradient (numpy's np.add.at builds it), with the rows a
lazy step does not touch held back; flax's nnx.Embed and nnx.value_and_grad.
"""

from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import adaptive_tx as atx
from adaptive_tx import sparse
from tests.cases import max_rel_diff, twin
from tests.test_sparse import dense_of, lazy_reference, sparse_stream
from tests.cases import make_params, run

SHAPES = {"table1d": (10,), "table10x3": (10, 3), "table100x40": (100, 40)}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
INDICES = np.array([3, 7, 3, 0], np.int32)  # a repeated row


def problem(cells):
    """(params, row-sparse gradients, their dense twin, the touched rows): one table per cell."""
    rng = np.random.default_rng(0)
    params, rows, dense, touched = {"w": jnp.ones(3)}, {}, {}, {}
    rows["w"] = dense["w"] = jnp.asarray([0.5, -2.0, 0.25])
    for name, (shape, dtype) in cells.items():
        values = np.round(rng.normal(size=(INDICES.size,) + shape[1:]) * 64) / 64
        params[name] = jnp.asarray(rng.normal(size=shape), dtype)
        rows[name] = atx.RowSparse(INDICES, jnp.asarray(values, dtype), shape[0])
        dense[name] = jnp.asarray(dense_of(INDICES, values, shape[0]), dtype)
        touched[name] = np.isin(np.arange(shape[0]), INDICES)
    return params, rows, dense, touched


# Every leaf shape and storage dtype of the grid, as the tables of one model (one compile).
CELLS = {f"{s}_{d}": (SHAPES[s], DTYPES[d]) for s in SHAPES for d in DTYPES}


def one_step(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return sparse.apply_updates(params, updates)


# transform -> (the chain as a user writes it, the chain with the fix, the dense optax reference)
GRID = {
    "clip": (
        lambda: optax.chain(optax.clip(0.5), atx.adam(0.1)),
        lambda: optax.chain(sparse.on_values(optax.clip(0.5)), atx.adam(0.1)),
        lambda: optax.chain(optax.clip(0.5), optax.adam(0.1)),
    ),
    "clip_by_global_norm": (
        lambda: optax.chain(optax.clip_by_global_norm(1.0), atx.adam(0.1)),
        lambda: optax.chain(sparse.on_values(optax.clip_by_global_norm(1.0)), atx.adam(0.1)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1)),
    ),
    "scale_after_adam": (
        lambda: optax.chain(atx.adam(0.1), optax.scale(2)),
        lambda: optax.chain(atx.adam(0.1), sparse.on_values(optax.scale(2))),
        lambda: optax.chain(optax.adam(0.1), optax.scale(2)),
    ),
    "add_decayed_weights": (
        lambda: optax.chain(optax.add_decayed_weights(0.1), atx.adam(0.1)),
        lambda: optax.chain(sparse.on_values(optax.add_decayed_weights(0.1)), atx.adam(0.1)),
        lambda: optax.chain(optax.add_decayed_weights(0.1), optax.adam(0.1)),
    ),
    "apply_if_finite": (
        lambda: optax.apply_if_finite(atx.adam(0.1), 3),
        lambda: atx.skip_nonfinite(atx.adam(0.1)),
        lambda: optax.apply_if_finite(optax.adam(0.1), 3),
    ),
    "trace_after_adam": (
        lambda: optax.chain(atx.adam(0.1), optax.trace(0.9)),
        lambda: optax.chain(atx.adam(0.1), sparse.trace(0.9)),
        lambda: optax.chain(optax.adam(0.1), optax.trace(0.9)),
    ),
}


@pytest.mark.parametrize("transform", GRID, ids=str)
def test_optax_transform_grid_raises_as_is_and_is_right_fixed(transform):
    """Each row of the compatibility table, over every leaf shape and dtype: the transform as
    written raises at trace time (never a wrong step); with the fix, one step equals dense optax
    with the untouched rows held back."""
    as_is, fixed, reference = GRID[transform]
    params, rows, dense, touched = problem(CELLS)
    for name in CELLS:  # each cell alone, traced only
        cell = lambda tree: {"w": tree["w"], name: tree[name]}
        with pytest.raises((TypeError, ValueError)) as error:
            jax.eval_shape(lambda p, g: one_step(as_is(), p, g), cell(params), cell(rows))
        if transform in ("clip", "scale_after_adam"):  # the library sees the indices: it says why
            assert "mapped over them" in str(error.value), name
            assert "on_values" in str(error.value), name
    ours = jax.jit(lambda p, g: one_step(fixed(), p, g))(params, rows)
    theirs = jax.jit(lambda p, g: one_step(reference(), p, g))(params, dense)
    for name, (shape, dtype) in CELLS.items():
        hold = touched[name].reshape((-1,) + (1,) * (len(shape) - 1))
        expected = np.where(hold, theirs[name], params[name]).astype(np.float32)
        exact = dtype == jnp.float32
        np.testing.assert_allclose(
            np.asarray(ours[name], np.float32), expected,
            rtol=1e-5 if exact else 2**-7, atol=1e-6 if exact else 2**-6, err_msg=name,
        )
        moved = np.any(np.asarray(ours[name] != params[name]).reshape(shape[0], -1), axis=1)
        np.testing.assert_array_equal(moved, touched[name], err_msg=name)
    np.testing.assert_allclose(ours["w"], theirs["w"], rtol=1e-5)


@pytest.mark.parametrize("transform", ["clip", "clip_int", "scale_int"])
def test_changed_indices_raise_under_jit_at_trace_time(transform):
    """Integer-valued maps too (optax.clip(5), optax.scale(2)): the bool flags change dtype."""
    first = {
        "clip": optax.clip(0.5),
        "clip_int": optax.clip(5),
        "scale_int": optax.scale(2),
    }[transform]
    params, rows, _, _ = problem({"emb": ((10, 3), jnp.float32)})
    tx = optax.chain(first, atx.sparse.prepare_rows(), atx.adagrad(0.1))
    step = jax.jit(lambda g, s: tx.update(g, s, params))
    with pytest.raises(TypeError, match=r"prepare_rows: row-sparse leaf \['emb'\] has indices"):
        step(rows, tx.init(params))


def test_zeroed_indices_raise_outside_jit_and_are_dropped_and_counted_inside():
    """A map that keeps the dtypes but changes the values (zeros_like) clears the intact flags."""
    params, rows, _, _ = problem({"emb": ((10, 3), jnp.float32)})
    zeroed = jax.tree.map(jnp.zeros_like, rows)
    with pytest.raises(ValueError, match=r"apply_updates: row-sparse leaf \['emb'\] has changed"):
        sparse.apply_updates(params, zeroed)
    with pytest.raises(ValueError, match="changed indices"):
        params["emb"] + zeroed["emb"]
    tx = optax.chain(sparse.prepare_rows(), atx.adam(0.1))
    updates, state = jax.jit(lambda g, s: tx.update(g, s, params))(
        {**zeroed, "emb": zeroed["emb"].with_values(jnp.ones((4, 3)))}, tx.init(params)
    )
    assert int(state[0].dropped_rows) == 4
    new = jax.jit(sparse.apply_updates)(params, updates)
    np.testing.assert_array_equal(new["emb"], params["emb"])  # row 0 not touched


def test_on_values_refuses_per_coordinate_state():
    with pytest.raises(TypeError, match=r"sparse.on_values: .* per-coordinate state"):
        sparse.on_values(optax.trace(0.9)).init({"emb": jnp.zeros((4, 2))})


# ---------------------------------------------------------------------------- accumulation


@pytest.mark.parametrize("shape", ["table1d", "table10x3"])
def test_multi_steps_equals_optax_multisteps_on_dense_gradients(shape):
    k, windows = 3, 2
    shape = SHAPES[shape]
    rng = np.random.default_rng(1)
    params = {"emb": jnp.asarray(rng.normal(size=shape), jnp.float32), "w": jnp.ones(3)}
    rows, dense = [], []
    for _ in range(k * windows):
        idx = rng.integers(0, shape[0], size=4).astype(np.int32)
        vals = rng.normal(size=(4,) + shape[1:]).astype(np.float32)
        w = jnp.asarray(rng.normal(size=3), jnp.float32)
        rows.append({"emb": atx.RowSparse(idx, vals, shape[0]), "w": w})
        dense.append({"emb": jnp.asarray(dense_of(idx, vals, shape[0])), "w": w})
    ours, _, traces = run(sparse.multi_steps(atx.adagrad(0.5), every_k=k), params, rows)
    theirs, _, _ = run(optax.MultiSteps(optax.adagrad(0.5), k).gradient_transformation(), params,
                       dense)
    assert traces == 1
    # rows summed then divided by k, where optax keeps a running mean: equal up to rounding (a
    # few float32 ulps of the parameters, which are ~1)
    assert max_rel_diff(ours, theirs, 1.0) <= 1e-6
    assert max_rel_diff(ours[-1]["emb"], params["emb"]) > 1e-2
    # optax.MultiSteps itself raises on row-sparse leaves (a structure error, never a wrong step)
    with pytest.raises((TypeError, ValueError)):
        run(optax.MultiSteps(atx.adagrad(0.5), k).gradient_transformation(), params, rows[:1])


def test_multi_steps_keeps_lazy_semantics_per_window():
    """Adam through multi_steps: only the rows of the window move; = one lazy Adam step on the
    window's mean gradient."""
    params, rows, _, _ = problem({"emb": ((10, 3), jnp.float32)})
    tx = sparse.multi_steps(atx.adam(0.1), every_k=2)
    state = tx.init(params)
    update = jax.jit(lambda g, s: tx.update(g, s, params))
    other = {**rows, "emb": atx.RowSparse([5, 9, 9, 9], jnp.ones((4, 3)), 10)}
    u1, state = update(rows, state)
    np.testing.assert_array_equal(sparse.apply_updates(params, u1)["emb"], params["emb"])
    u2, state = update(other, state)
    mean = {
        "emb": atx.RowSparse(
            np.r_[INDICES, 5, 9, 9, 9], jnp.concatenate([rows["emb"].values, jnp.ones((4, 3))]) / 2, 10
        ),
        "w": rows["w"],
    }
    expected = jax.jit(lambda p, g: one_step(atx.adam(0.1), p, g))(params, mean)
    np.testing.assert_allclose(sparse.apply_updates(params, u2)["emb"], expected["emb"], rtol=1e-6)


# ---------------------------------------------------------------------------- parameter groups


LABEL_FNS = {
    "by_path": lambda tree: jax.tree_util.tree_map_with_path(
        lambda path, _: "table" if "emb" in jax.tree_util.keystr(path) else "rest", tree
    ),
    "by_ndim": lambda tree: jax.tree.map(lambda x: "table" if x.ndim == 2 else "rest", tree),
}


@pytest.mark.parametrize("label_fn", LABEL_FNS, ids=str)
def test_multi_transform_with_a_label_function_and_row_sparse_leaves(label_fn):
    """Row-wise Adagrad for the table, AdamW for the rest, no is_leaf needed."""
    row_sparse, dense, _ = sparse_stream(6)
    params = {**make_params(), "b": jnp.zeros(4)}
    label = LABEL_FNS[label_fn]
    tx = optax.multi_transform(
        {"table": atx.rowwise_adagrad(0.1), "rest": atx.adamw(0.01, weight_decay=0.1)}, label
    )
    ours, _, _ = run(tx, params, row_sparse)
    dense_tx = optax.multi_transform(
        {"table": atx.rowwise_adagrad(0.1), "rest": optax.adamw(0.01, weight_decay=0.1)}, label
    )
    theirs, _, _ = run(dense_tx, params, dense)  # row-wise Adagrad: lazy = dense
    assert max_rel_diff(ours, theirs) <= 1e-5
    assert max_rel_diff(ours[-1]["emb"], params["emb"]) > 1e-3


# ---------------------------------------------------------------------------- row indices


def test_int64_ids_are_checked_before_narrowing():
    with pytest.raises(IndexError, match=r"row index 4294967299 \(at position 0\)"):
        atx.RowSparse(np.array([2**32 + 3]), jnp.ones((1, 2)), 10)
    with jax.enable_x64(True):
        ids = jnp.array([2**32 + 3, 1], jnp.int64)
        table = jnp.zeros((10, 2), jnp.float32)
        add = jax.jit(lambda ids: table + atx.RowSparse(ids, jnp.ones((2, 2), jnp.float32), 10))
        np.testing.assert_array_equal(np.flatnonzero(np.asarray(add(ids))[:, 0]), [1])


def test_unique_indices_promise_is_checked_or_not_trusted():
    with pytest.raises(ValueError, match="unique_indices=True but row 2 appears 2 times"):
        atx.RowSparse([2, 2], jnp.ones((2, 1)), 4, unique_indices=True)
    params = {"emb": jnp.zeros((4, 1))}
    tx = atx.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)

    @jax.jit
    def step(ids):
        g = {"emb": atx.RowSparse(ids, jnp.ones((2, 1)), 4, unique_indices=True)}
        return sparse.apply_updates(params, tx.update(g, tx.init(params), params)[0])

    np.testing.assert_array_equal(step(jnp.array([2, 2]))["emb"].ravel(), [0, 0, -1, 0])


def test_embed_negative_id_forward_and_gradient_agree_with_nnx_embed():
    ids = jnp.array([[1, -1, 3]])
    model = sparse.Embed(6, 2, rngs=nnx.Rngs(0))
    twin = nnx.Embed(6, 2, rngs=nnx.Rngs(0))
    loss = lambda m, ids: (m(ids) ** 2).sum()
    _, grads = nnx.jit(sparse.value_and_grad(loss))(model, ids)
    _, grads2 = nnx.jit(nnx.value_and_grad(loss))(twin, ids)
    dense = grads["embedding"].get_value().todense()
    np.testing.assert_allclose(dense, grads2["embedding"].get_value(), rtol=1e-6)
    assert np.any(np.asarray(dense[5]) != 0)


@pytest.mark.parametrize("nesterov", [False, True])
def test_rmsprop_momentum_is_lazy_on_rows(nesterov):
    row_sparse, dense, touched = sparse_stream(20)
    params = make_params()
    kwargs = {"learning_rate": 0.01, "momentum": 0.9, "nesterov": nesterov}
    ours, _, _ = run(atx.rmsprop(**kwargs), params, row_sparse)
    theirs = lazy_reference(optax.rmsprop(**kwargs), params, dense, touched)
    assert max_rel_diff(ours, theirs) <= 3e-5  # the rows' arithmetic fused otherwise by XLA
    assert max_rel_diff(ours[-1]["emb"], params["emb"]) > 1e-2



@pytest.mark.parametrize(
    "make",
    [
        lambda: atx.compat.torch.RMSprop(lr=0.01, momentum=0.9),
        lambda: atx.compat.keras.RMSprop(learning_rate=0.01, momentum=0.9),
    ],
    ids=["torch", "keras"],
)
def test_presets_rmsprop_momentum_is_lazy_on_rows(make):
    """The presets' momentum is lazy on rows too: their dense arithmetic (checked against torch
    and keras in their own modules) with the untouched rows held back."""
    row_sparse, dense, touched = sparse_stream(12)
    params = make_params()
    ours, _, _ = run(make(), params, row_sparse)
    theirs = lazy_reference(make(), params, dense, touched)
    assert max_rel_diff(ours, theirs) <= 3e-5
    assert max_rel_diff(ours[-1]["emb"], params["emb"]) > 1e-3

@pytest.mark.parametrize("apply", ["radd", "optax_apply_updates"])
def test_negative_index_in_a_dense_sum_raises(apply):
    table, g = jnp.zeros((4, 2)), atx.RowSparse([1, -1], jnp.ones((2, 2)), 4)
    with pytest.raises(IndexError, match=r"has row index -1 \(at position 1\)"):
        table + g if apply == "radd" else optax.apply_updates({"e": table}, {"e": g})


def test_the_sparse_package_imports_flax_only_in_its_nnx_module():
    """flax is imported by Embed / value_and_grad on first use (module __getattr__), not with
    `import adaptive_tx.sparse`."""
    package = pathlib.Path(sparse.__path__[0])
    for path in package.glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module-level imports only
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            flax = any(n.split(".")[0] == "flax" for n in names)
            nnx_module = any(n.endswith("._nnx") for n in names)
            assert not (flax and path.name != "_nnx.py") and not nnx_module, path.name
    assert sparse.Embed.__module__ == "adaptive_tx.sparse._nnx"
    assert set(sparse.__all__) <= set(dir(sparse))


def test_masked_with_a_mask_tree_and_row_sparse_leaves():
    row_sparse, dense, _ = sparse_stream(4)
    params = make_params()
    mask = {"w": False, "b": False, "emb": True}
    ours, _, _ = run(optax.masked(atx.adagrad(0.1), mask), params, row_sparse)
    theirs, _, _ = run(optax.masked(optax.adagrad(0.1), mask), params, dense)
    assert max_rel_diff(ours, theirs) <= 1e-5
    assert max_rel_diff(ours[-1]["emb"], params["emb"]) > 1e-3


def test_masked_with_a_mask_function_raises_on_row_sparse_leaves():
    """The table's row for mask functions: optax.masked itself gives the mask function the
    gradient tree, so a RowSparse leaf's children make a structure error (never a step on the
    wrong leaves); with is_leaf the same function works."""
    params = {"emb": jnp.ones((10, 3)), "b": jnp.ones(3)}
    g = {"emb": atx.RowSparse([3, 7], jnp.ones((2, 3)), 10), "b": jnp.ones(3)}
    by_ndim = lambda tree: jax.tree.map(lambda x: x.ndim > 1, tree)
    tx = optax.masked(atx.adam(0.1), by_ndim)
    with pytest.raises(ValueError, match="pytree structure"):
        tx.update(g, tx.init(params), params)
    fixed = lambda tree: jax.tree.map(lambda x: x.ndim > 1, tree, is_leaf=sparse.is_row_sparse)
    tx = optax.masked(atx.adam(0.1), fixed)
    updates, _ = tx.update(g, tx.init(params), params)
    assert sparse.is_row_sparse(updates["emb"]) and bool(jnp.all(updates["b"] == 1.0))


@pytest.mark.parametrize("name", ["adamw", "nadamw", "adamaxw"])
def test_weight_decay_mask_functions_see_row_sparse_leaves_as_tables(name):
    """The aliases' mask function sees a RowSparse leaf as its table's shape: the decay goes
    where the same function puts it on the dense gradients (lazy: on the touched rows only)."""
    row_sparse, dense, touched = sparse_stream(6)
    params = make_params()
    by_ndim = lambda tree: jax.tree.map(lambda x: x.ndim > 1, tree)
    kwargs = {"learning_rate": 0.01, "weight_decay": 0.5, "mask": by_ndim}
    ours, _, _ = run(getattr(atx, name)(**kwargs), params, row_sparse)
    theirs = lazy_reference(twin(name)(**kwargs), params, dense, touched)
    assert max_rel_diff(ours, theirs) <= 3e-5
    bias = run(getattr(atx, name)(**{**kwargs, "weight_decay": 0.0}), params, row_sparse)[0]
    assert np.array_equal(ours[-1]["b"], bias[-1]["b"])  # the 1-D bias is masked out
