"""The row path: a rule's step on the gathered rows of its statistics, and the chain around it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from adaptive_tx import _validate
from adaptive_tx.sparse._type import (
    INT32_MAX,
    RowSparse,
    check_rows,
    is_row_sparse,
    per_row,
)


def apply_rows(step: Callable, g: RowSparse, stats: tuple[jax.Array, ...]) -> tuple:
    r"""The row-sparse execution of an elementwise step: gather rows, step them, scatter them back.

    .. math::

       (u_R, s'_R) = \mathrm{step}(g_R, s_R), \quad s'_r = s_r \;(r \notin R),

    where :math:`R` is the set of distinct in-range rows of `g` (repeated rows summed first). This
    is how `adaptive_tx.rule.dense_transformation` runs a `Rule` on a `RowSparse` leaf, with
    ``step = partial(apply_rule, rule, t=count)``; the arithmetic is the rule's, once.

    Args:
      step: ``(g_rows, stat_rows) -> (update_rows, new_stat_rows)``, elementwise (the rules are).
      g: the row-sparse gradient of one leaf.
      stats: the leaf's statistics, each shaped like the leaf (or like `row_shape` of it).

    Returns:
      The update as a `RowSparse` on the same rows, and the new statistics (dense, only the
      touched rows changed; in place when the buffers are donated).

    Example:
      >>> sgd_step = lambda g, stats: (-g, tuple(s + 1 for s in stats))
      >>> g = RowSparse(jnp.array([1, 1]), jnp.ones((2, 1)), num_rows=3)
      >>> update, (visits,) = apply_rows(sgd_step, g, (jnp.zeros((3, 1)),))
      >>> update.todense().ravel(), visits.ravel()
      (Array([ 0., -2.,  0.], dtype=float32), Array([0., 1., 0.], dtype=float32))
    """
    g = g.coalesce()
    rows = g.indices
    # A statistic may be stored in several arrays (8-bit codes and their per-row block scales):
    # each is gathered and scattered by row.
    gather = lambda a: a.at[rows].get(mode="fill", fill_value=0)
    scatter = lambda a, r: a.at[rows].set(r, mode="drop", unique_indices=True)
    update, new_rows = step(g.values, tuple(jax.tree.map(gather, s) for s in stats))
    new_stats = tuple(jax.tree.map(scatter, s, r) for s, r in zip(stats, new_rows))
    # Empty slots computed on zeros; keep their update zero (a rule may give 0/0 there).
    return g.with_values(jnp.where(per_row(g.in_range(), update), update, 0)), new_stats


def map_values(fn: Callable[[jax.Array], jax.Array], tree: optax.Updates) -> optax.Updates:
    """``jax.tree.map(fn, tree)``, applying `fn` to the values of row-sparse leaves.

    For transformations that scale each update by a number (a learning rate, a clipping factor).

    Example:
      >>> tree = {"w": jnp.ones(2), "emb": RowSparse(jnp.array([1]), jnp.ones((1, 2)), 3)}
      >>> map_values(lambda u: -0.5 * u, tree)["emb"].values
      Array([[-0.5, -0.5]], dtype=float32)
    """
    check_rows("sparse.map_values", tree)
    return jax.tree.map(
        lambda x: x.with_values(fn(x.values)) if is_row_sparse(x) else fn(x),
        tree,
        is_leaf=is_row_sparse,
    )


def map_with_params(
    fn: Callable[[jax.Array, jax.Array], jax.Array], updates: optax.Updates, params: optax.Params
):
    """``jax.tree.map(fn, updates, params)``; a row-sparse update meets only its rows of the params.

    For transformations that add a function of the parameters (weight decay): on a `RowSparse`
    leaf, `fn` gets the coalesced update rows and the same rows of the parameter, so only the
    touched rows decay (lazy semantics; ``prepare_rows(lazy=False)`` for the dense ones).

    Example:
      >>> update = RowSparse(jnp.array([2]), jnp.zeros((1, 1)), num_rows=3)
      >>> params = jnp.array([[1.0], [2.0], [3.0]])
      >>> map_with_params(lambda u, p: u + 0.1 * p, update, params).todense().ravel()
      Array([0. , 0. , 0.3], dtype=float32)
    """

    check_rows("sparse.map_with_params", updates)

    def leaf_fn(u, p):
        if not is_row_sparse(u):
            return fn(u, p)
        u = u.coalesce()
        return u.with_values(fn(u.values, p.at[u.indices].get(mode="fill", fill_value=0)))

    return jax.tree.map(leaf_fn, updates, params, is_leaf=is_row_sparse)


def apply_updates(params: optax.Params, updates: optax.Updates) -> optax.Params:
    r"""``optax.apply_updates`` for update trees with row-sparse leaves: :math:`\theta + u`.

    A `RowSparse` update adds its rows to the parameter and leaves every other row as it is; with
    donated parameters the addition is in place (K rows read and written). ``optax.apply_updates``
    computes the same through ``RowSparse.__radd__``; this one also raises ``IndexError`` naming the
    leaf for an out-of-range index outside ``jit``.

    Args:
      params: the parameters (dense arrays).
      updates: the updates, a tree of the same structure, with dense or `RowSparse` leaves.

    Returns:
      The new parameters, each in its own dtype.

    Example:
      >>> params = {"emb": jnp.ones((3, 1))}
      >>> updates = {"emb": RowSparse(jnp.array([0]), jnp.array([[-1.0]]), num_rows=3)}
      >>> apply_updates(params, updates)["emb"].ravel()
      Array([0., 1., 1.], dtype=float32)
    """
    check_rows("apply_updates", updates)
    return optax.apply_updates(params, updates)


def global_norm(tree: optax.Updates) -> jax.Array:
    r"""The global norm :math:`\sqrt{\sum_\ell \lVert g_\ell \rVert^2}`, row-sparse leaves included.

    Repeated rows are summed first, so this is the norm of the dense gradient.

    Example:
      >>> global_norm({"w": jnp.array([3.0]), "emb": RowSparse(jnp.array([1, 1]),
      ...                                                      jnp.array([[2.0], [2.0]]), 5)})
      Array(5., dtype=float32)
    """
    coalesced = jax.tree.map(
        lambda x: x.coalesce().values if is_row_sparse(x) else x, tree, is_leaf=is_row_sparse
    )
    return optax.tree.norm(coalesced)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    r"""``optax.clip_by_global_norm`` for gradient trees with row-sparse leaves.

    .. math::

       g \leftarrow g \cdot \min\!\left(1, \frac{c}{\lVert g \rVert}\right), \qquad
       \lVert g \rVert = \sqrt{\textstyle\sum_\ell \lVert g_\ell \rVert^2} \ (\mathtt{global\_norm}).

    The same arithmetic as optax, on the dense leaves and the (coalesced) rows of the row-sparse
    ones; the row-sparse leaves come out coalesced.

    Reference: Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
    networks", ICML 2013, https://arxiv.org/abs/1211.5063

    Args:
      max_norm: :math:`c`, > 0.

    Returns:
      An `optax.GradientTransformation` whose state is ``optax.EmptyState``.

    Example:
      >>> tx = clip_by_global_norm(1.0)
      >>> g = {"w": jnp.array([3.0]), "emb": RowSparse(jnp.array([2]), jnp.array([[4.0]]), 3)}
      >>> clipped, _ = tx.update(g, tx.init(None))
      >>> clipped["w"], clipped["emb"].todense().ravel()
      (Array([0.6], dtype=float32), Array([0. , 0. , 0.8], dtype=float32))
    """
    _validate.check_non_negative("max_norm", max_norm)

    def update_fn(updates, state, params=None):
        del params
        check_rows("clip_by_global_norm", updates)
        updates = jax.tree.map(
            lambda x: x.coalesce() if is_row_sparse(x) else x, updates, is_leaf=is_row_sparse
        )
        norm = global_norm(updates)
        trigger = jnp.squeeze(norm < max_norm)
        clip = lambda t: jax.lax.select(trigger, t, (t / norm.astype(t.dtype)) * max_norm)
        return map_values(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class PrepareRowsState(NamedTuple):
    """State of `prepare_rows`.

    Attributes:
      dropped_rows: int32 scalar, how many out-of-range row indices were dropped so far
        (saturating); a training loop can alarm when it grows.

    Example:
      >>> tx = prepare_rows()
      >>> g = RowSparse(jnp.array([1, 9]), jnp.ones((2, 1)), num_rows=4)
      >>> _, state = jax.jit(tx.update)(g, tx.init(None))  # inside jit: dropped and counted
      >>> state
      PrepareRowsState(dropped_rows=Array(1, dtype=int32))
    """

    dropped_rows: jax.Array


def _count_dropped(state: PrepareRowsState, leaves: list) -> PrepareRowsState:
    """`state` with the out-of-range indices of the row-sparse `leaves` added (saturating)."""
    bad = sum(
        (jnp.sum(x.out_of_range(), dtype=jnp.int32) for x in leaves if is_row_sparse(x)),
        jnp.zeros([], jnp.int32),
    )
    dropped = state.dropped_rows + jnp.minimum(bad, INT32_MAX - state.dropped_rows)
    return PrepareRowsState(dropped_rows=dropped)


def prepare_rows(lazy: bool = True) -> optax.GradientTransformation:
    r"""First in a chain: sums repeated rows, drops and counts bad indices; or makes rows dense.

    With ``lazy=True`` each `RowSparse` leaf leaves coalesced (repeated rows summed once, here,
    rather than in every transformation after it), out-of-range indices dropped and counted in
    `PrepareRowsState`; the chain after it updates only the touched rows (torch SparseAdam's lazy
    semantics, see the module docstring). With ``lazy=False`` each `RowSparse` leaf becomes its
    dense array :math:`G` and the chain after it is exactly the dense optax computation (untouched
    rows get :math:`g = 0`: Adam's moments decay and its momentum keeps moving them). Dense leaves
    pass through either way.

    Reference: ``torch.optim.SparseAdam``,
    https://pytorch.org/docs/stable/generated/torch.optim.SparseAdam.html

    Args:
      lazy: keep row-sparse leaves row-sparse (lazy updates) or make them dense (dense semantics).

    Returns:
      An `optax.GradientTransformation` whose state is `PrepareRowsState`.

    Example:
      >>> import optax, adaptive_tx as atx
      >>> tx = optax.chain(prepare_rows(), atx.adam(0.1))
      >>> params = {"emb": jnp.zeros((4, 1))}
      >>> g = {"emb": RowSparse(jnp.array([1, 1]), jnp.ones((2, 1)), num_rows=4)}
      >>> updates, state = tx.update(g, tx.init(params), params)
      >>> apply_updates(params, updates)["emb"].ravel()
      Array([ 0. , -0.1,  0. ,  0. ], dtype=float32)
    """

    def init_fn(params):
        del params
        return PrepareRowsState(dropped_rows=jnp.zeros([], jnp.int32))

    def prepare(x):
        if not is_row_sparse(x):
            return x
        return x.coalesce() if lazy else x.todense()

    def update_fn(updates, state, params=None):
        del params
        check_rows("prepare_rows", updates)
        leaves = jax.tree.leaves(updates, is_leaf=is_row_sparse)
        updates_out = jax.tree.map(prepare, updates, is_leaf=is_row_sparse)
        return updates_out, _count_dropped(state, leaves)

    return optax.GradientTransformation(init_fn, update_fn)


def row_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one statistic per row: ``(V, D, ...) -> (V, 1, ...)`` (1-d and 0-d: unchanged).

    Example:
      >>> row_shape((1000, 64)), row_shape((7,))
      ((1000, 1), (7,))
    """
    return tuple(shape[:1]) + (1,) * max(len(shape) - 1, 0)


def row_mean(x: jax.Array) -> jax.Array:
    r"""The mean over each row, :math:`\frac{1}{D}\sum_d x_{r,d}`, kept as shape `row_shape`.

    Example:
      >>> row_mean(jnp.array([[1.0, 3.0], [0.0, 4.0]]))
      Array([[2.],
             [2.]], dtype=float32)
    """
    return jnp.mean(x, axis=tuple(range(1, x.ndim)), keepdims=True) if x.ndim > 1 else x



def trace(decay: float, nesterov: bool = False, accumulator_dtype: DTypeLike | None = None):
    r"""``optax.trace`` (momentum) for gradient trees with row-sparse leaves: lazy on the rows.

    .. math::

       b_r \leftarrow g_r + \mu\, b_r, \qquad u_r = b_r \ (\text{nesterov: } g_r + \mu\, b_r)
       \quad \text{for each touched row } r; \qquad b_r, u_r = 0 \text{ kept otherwise.}

    Dense leaves get ``optax.trace``'s update itself; on a `RowSparse` leaf optax's update runs
    on the touched rows of the trace (`apply_rows`), so the momentum of an untouched row neither
    decays nor moves the row, like the Adam family's moments (lazy semantics). This is the
    momentum of ``adaptive_tx.rmsprop(momentum=...)``.

    Reference: Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.

    Args:
      decay: the momentum :math:`\mu`.
      nesterov: Nesterov's form of the update.
      accumulator_dtype: the trace's dtype (None: the parameter's).

    Returns:
      An `optax.GradientTransformation` whose state is ``optax.TraceState``, as optax's.

    Example:
      >>> tx = trace(0.9)
      >>> g = RowSparse(jnp.array([1]), jnp.ones((1, 1)), num_rows=3)
      >>> u, state = tx.update(g, tx.init(jnp.zeros((3, 1))))
      >>> u, state = tx.update(g, state)
      >>> state.trace.ravel(), u.todense().ravel()
      (Array([0. , 1.9, 0. ], dtype=float32), Array([0. , 1.9, 0. ], dtype=float32))
    """
    inner = optax.trace(decay=decay, nesterov=nesterov, accumulator_dtype=accumulator_dtype)

    def row_step(g_rows, stats):
        update, state = inner.update(g_rows, optax.TraceState(trace=stats[0]))
        return update, (state.trace,)

    def update_fn(updates, state, params=None):
        del params
        check_rows("trace", updates)
        leaves, treedef = jax.tree.flatten(updates, is_leaf=is_row_sparse)
        if not any(is_row_sparse(x) for x in leaves):
            return inner.update(updates, state)
        new_updates, new_traces = [], []
        for g, t in zip(leaves, treedef.flatten_up_to(state.trace)):
            if is_row_sparse(g):
                update, (new_trace,) = apply_rows(row_step, g, (t,))
            else:
                update, (new_trace,) = row_step(g, (t,))
            new_updates.append(update)
            new_traces.append(new_trace)
        new_state = optax.TraceState(trace=treedef.unflatten(new_traces))
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformation(inner.init, update_fn)
