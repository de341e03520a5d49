r"""Row-sparse gradients for embedding tables, and the row-sparse execution of every rule.

A batch looks up :math:`K \ll V` rows of a :math:`V \times D` embedding table, so the table's
gradient is zero outside those rows. `RowSparse` holds it as the looked-up row indices and their
gradient rows; `value_and_grad` (with the drop-in `Embed`) gets it from a ``flax.nnx`` model without
ever forming a :math:`V \times D` gradient; and every transformation of this library takes it as a
leaf of the gradient tree, next to dense leaves, in one ``update`` call (so ``optax.chain`` and
``nnx.Optimizer`` work unchanged).

Semantics, the same for every rule because every rule goes through one path (`apply_rows`):

* **Duplicates.** Indices may repeat (a token twice in a batch); their rows are summed before any
  rule sees them, as `RowSparse.todense` sums them (in an unspecified order: with three or more
  repeats the rounding may differ from another summation order by an ulp).
* **Lazy updates (the default).** A transformation built by `adaptive_tx.rule.dense_transformation`
  gathers the touched rows of its statistics, applies its `Rule` to them (``rule.apply_rule``,
  the very function the dense path applies to whole leaves) with the transformation's step count
  :math:`t`, and scatters them back:

  .. math::

     (u_r, s_r) \leftarrow \mathrm{apply\_rule}(g_r, s_r, t) \text{ for each touched row } r,
     \qquad s_r \text{ kept and } u_r = 0 \text{ for every other row}.

  Untouched rows keep their statistics and their parameters: the semantics of
  ``torch.optim.SparseAdam`` and of TF-Addons' ``LazyAdam``. For Adagrad this is the dense
  update, since a zero gradient moves neither the accumulator nor the parameter (the accumulators
  agree bit for bit, the parameters up to the rounding of the final add; row-wise Adagrad also up
  to the summation order of the row means). For RMSProp the averages of untouched rows do not decay. For the Adam family the
  moments of untouched rows neither decay nor move the row (momentum stops when a row is not looked
  up). :math:`t` counts the transformation's steps, like torch's per-parameter ``step`` (one
  counter per tensor, advanced at every ``optimizer.step()``), so a row first touched at step 1000
  is bias-corrected as at step 1000, in torch SparseAdam and here.
* **Dense semantics, one flag away.** ``prepare_rows(lazy=False)`` first in a chain turns every
  row-sparse leaf into its dense array; the chain after it is then the dense transformation, with
  its dense cost (:math:`V \times D` per step, like optax).
* **Bad indices.** A negative or too large row index never touches another row (plain JAX gathers
  clamp such indices and its scatters wrap negative ones). Outside ``jit`` the functions here raise
  ``IndexError`` naming the leaf and the index; inside ``jit`` those entries are dropped, and
  `prepare_rows` counts them in its state so a training loop can raise an alarm.
* **The rest of a chain.** The learning rate and weight decay act on the values of the touched
  rows only (`map_values`, `map_with_params`); `clip_by_global_norm` is the optax transformation
  for trees with row-sparse leaves; `apply_updates` (or ``optax.apply_updates``, through
  ``RowSparse.__radd__``) adds the rows to the parameters. optax transformations that map over the
  leaves themselves (``optax.trace``, ``optax.clip_by_global_norm``) need dense leaves: put
  ``prepare_rows(lazy=False)`` before them.

Cost: a step sorts the K indices and reads and writes K rows of the parameters and of each
statistic; with donated buffers nothing of size :math:`V \times D` is copied or allocated
(``benchmarks/sparse_rows.py``, ``tests/test_sparse.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from adaptive_tx import _validate

__all__ = (
    "Embed",
    "PrepareRowsState",
    "RowSparse",
    "apply_rows",
    "apply_updates",
    "check_rows",
    "clip_by_global_norm",
    "global_norm",
    "is_row_sparse",
    "map_values",
    "map_with_params",
    "prepare_rows",
    "row_mean",
    "row_shape",
    "shape_view",
    "value_and_grad",
)

INT32_MAX = np.iinfo(np.int32).max


@jax.tree_util.register_pytree_with_keys_class
class RowSparse:
    r"""A gradient that is zero outside some rows of a table: ``indices`` [K] and ``values`` [K, ...].

    It stands for the dense array of shape ``(num_rows,) + values.shape[1:]``

    .. math:: G_r = \sum_{k\,:\,\mathrm{indices}_k = r} \mathrm{values}_k ,

    the gradient that ``torch.nn.Embedding(sparse=True)`` returns as a sparse COO tensor
    (https://pytorch.org/docs/stable/generated/torch.nn.Embedding.html) and TensorFlow as
    ``IndexedSlices``. It is a pytree (children ``indices`` and ``values``), so it crosses ``jit``,
    and every transformation of this library accepts it as a leaf of a gradient tree.

    Args:
      indices: integer row indices, shape [K], stored as int32; they may repeat (the rows are
        summed). Indices outside ``[0, num_rows)`` are dropped (see the module docstring).
      values: the gradient rows, shape [K, ...], any floating dtype.
      num_rows: V, the number of rows of the table.
      unique_indices: a promise that the in-range indices are distinct, which `coalesce` makes
        and which lets the rules skip sorting; leave False unless you know. In such a coalesced
        gradient the index ``num_rows`` marks an empty slot (zero values, dropped by scatters).

    Example:
      >>> g = RowSparse(jnp.array([2, 0, 2]), jnp.ones((3, 2)), num_rows=4)
      >>> g.shape
      (4, 2)
      >>> g.todense()
      Array([[1., 1.],
             [0., 0.],
             [2., 2.],
             [0., 0.]], dtype=float32)
    """

    __array_ufunc__ = None  # numpy then leaves ``array + RowSparse`` to RowSparse.__radd__

    def __init__(self, indices: Any, values: Any, num_rows: int, unique_indices: bool = False):
        indices, values = jnp.asarray(indices), jnp.asarray(values)
        if not jnp.issubdtype(indices.dtype, jnp.integer) or indices.ndim != 1:
            raise TypeError(
                f"RowSparse: indices must be a 1-d integer array, got {indices.dtype} of shape "
                f"{indices.shape}"
            )
        if values.ndim < 1 or values.shape[0] != indices.shape[0]:
            raise ValueError(
                f"RowSparse: values must have one row per index ({indices.shape[0]}), got shape "
                f"{values.shape}"
            )
        if not jnp.issubdtype(values.dtype, jnp.inexact):
            raise TypeError(f"RowSparse: values must be floating, got {values.dtype}")
        if isinstance(num_rows, bool) or not isinstance(num_rows, (int, np.integer)):
            raise TypeError(f"RowSparse: num_rows must be an int, got num_rows={num_rows!r}")
        if not 0 <= num_rows <= INT32_MAX:
            raise ValueError(f"RowSparse: num_rows must be in [0, 2**31), got num_rows={num_rows}")
        self.indices = indices.astype(jnp.int32)
        self.values = values
        self.num_rows = int(num_rows)
        self.unique_indices = bool(unique_indices)

    def tree_flatten_with_keys(self):
        children = (
            (jax.tree_util.GetAttrKey("indices"), self.indices),
            (jax.tree_util.GetAttrKey("values"), self.values),
        )
        return children, (self.num_rows, self.unique_indices)

    @classmethod
    def tree_unflatten(cls, aux, children):
        # No checks: JAX rebuilds pytrees with tracers, None or sentinel objects as children.
        rows = object.__new__(cls)
        rows.indices, rows.values = children
        rows.num_rows, rows.unique_indices = aux
        return rows

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the dense array, ``(num_rows,) + values.shape[1:]``."""
        return (self.num_rows,) + tuple(self.values.shape[1:])

    @property
    def dtype(self) -> Any:
        """The dtype of the values."""
        return self.values.dtype

    def __repr__(self) -> str:
        return (
            f"RowSparse(num_rows={self.num_rows}, rows={self.indices.shape[0]}, "
            f"shape={self.shape}, dtype={self.dtype}, unique_indices={self.unique_indices})"
        )

    def with_values(self, values: Any) -> RowSparse:
        """The same rows with other values (same number of rows; the indices are kept)."""
        return RowSparse(self.indices, values, self.num_rows, self.unique_indices)

    def in_range(self) -> jax.Array:
        """A bool [K] array: which indices lie in ``[0, num_rows)``."""
        return (self.indices >= 0) & (self.indices < self.num_rows)

    def out_of_range(self) -> jax.Array:
        """A bool [K] array: which indices are errors (not in range, nor a coalesced empty slot)."""
        empty_slot = self.unique_indices & (self.indices == self.num_rows)
        return ~self.in_range() & ~empty_slot

    def coalesce(self) -> RowSparse:
        """The same gradient with the rows of repeated indices summed (``unique_indices=True``).

        The distinct rows come first, in increasing order; the remaining slots (and every
        out-of-range index) hold the index ``num_rows``, which gathers read as zeros and scatters
        drop, with zero values. Jittable; the number of rows K is kept.

        Example:
          >>> RowSparse(jnp.array([3, 1, 3]), jnp.array([[1.0], [2.0], [4.0]]), 5).coalesce().values
          Array([[2.],
                 [5.],
                 [0.]], dtype=float32)
        """
        valid = self.in_range()
        indices = jnp.where(valid, self.indices, self.num_rows)
        values = jnp.where(_per_row(valid, self.values), self.values, 0)
        num = indices.shape[0]
        if self.unique_indices or num == 0:
            return RowSparse(indices, values, self.num_rows, unique_indices=True)
        # Sort the indices alone (a one-operand integer sort is several times faster than an
        # argsort on CPU), number the distinct rows, find each entry's row by binary search, and
        # sum the values into their row's slot without permuting them.
        sorted_indices = jnp.sort(indices)
        starts = jnp.concatenate([jnp.ones(1, bool), sorted_indices[1:] != sorted_indices[:-1]])
        slot_of_sorted = jnp.cumsum(starts, dtype=jnp.int32) - 1
        slot = slot_of_sorted[jnp.searchsorted(sorted_indices, indices)]
        values = jax.ops.segment_sum(values, slot, num_segments=num)
        indices = jnp.full(num, self.num_rows, jnp.int32).at[slot_of_sorted].set(sorted_indices)
        return RowSparse(indices, values, self.num_rows, unique_indices=True)

    def todense(self) -> jax.Array:
        """The dense array: zeros, plus the summed rows (outside ``jit``, bad indices raise).

        Example:
          >>> RowSparse(jnp.array([1]), jnp.array([[3.0]]), num_rows=2).todense()
          Array([[0.],
                 [3.]], dtype=float32)
        """
        _check_indices("RowSparse.todense", self)
        rows = self.coalesce()
        dense = jnp.zeros(self.shape, self.dtype)
        return dense.at[rows.indices].set(rows.values, mode="drop", unique_indices=True)

    def __radd__(self, other: Any) -> jax.Array:
        """``dense + row_sparse``: the dense array with the rows added (what ``optax.apply_updates``
        computes). Only the K rows are read and written (repeated rows are added one after the
        other); the result has ``other``'s dtype promoted with the values', as a dense sum has."""
        other = jnp.asarray(other)
        if other.shape != self.shape:
            raise ValueError(
                f"cannot add a row-sparse array of shape {self.shape} to an array of shape "
                f"{other.shape}"
            )
        dtype = jnp.result_type(other, self.values)
        indices = jnp.where(self.in_range(), self.indices, self.num_rows)  # no negative wrap-around
        if dtype == other.dtype:
            return other.at[indices].add(
                self.values, mode="drop", unique_indices=self.unique_indices
            )
        # A wider update (bf16 table, f32 rows): add in the wider dtype, row by row, as p + u does.
        rows = self.coalesce()
        dense = other.astype(dtype)
        new_rows = dense.at[rows.indices].get(mode="fill", fill_value=0) + rows.values
        return dense.at[rows.indices].set(new_rows, mode="drop", unique_indices=True)


def is_row_sparse(x: Any) -> bool:
    """Whether `x` is a `RowSparse` leaf (use as ``is_leaf=`` when mapping over gradient trees).

    Example:
      >>> is_row_sparse(RowSparse(jnp.zeros(1, int), jnp.zeros((1, 2)), 3)), is_row_sparse(1.0)
      (True, False)
    """
    return isinstance(x, RowSparse)


def _per_row(mask: jax.Array, values: jax.Array) -> jax.Array:
    """A [K] mask shaped to broadcast against [K, ...] values."""
    return mask.reshape(mask.shape + (1,) * (values.ndim - 1))


def _check_indices(name: str, rows: RowSparse) -> None:
    """Raises IndexError for the first out-of-range index of concrete `rows` (tracers pass)."""
    if isinstance(rows.indices, jax.core.Tracer):
        return
    indices = np.asarray(rows.indices)
    bad = np.flatnonzero(np.asarray(rows.out_of_range()))
    if bad.size:
        raise IndexError(
            f"{name} has row index {indices[bad[0]]} (at position {bad[0]}) outside "
            f"[0, {rows.num_rows}); {bad.size} of its {indices.size} indices are out of range"
        )


def check_rows(where: str, tree: Any) -> None:
    """Raises IndexError naming the first row-sparse leaf of `tree` with an out-of-range index.

    Runs only on concrete indices (outside ``jit``); under ``jit`` the bad entries are dropped
    instead, and `prepare_rows` counts them.

    Example:
      >>> check_rows("update", {"emb": RowSparse(jnp.array([0, 7]), jnp.ones((2, 1)), 5)})
      Traceback (most recent call last):
      ...
      IndexError: update: row-sparse leaf ['emb'] has row index 7 (at position 1) outside [0, 5); 1 of its 2 indices are out of range
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_row_sparse)[0]:
        if is_row_sparse(leaf):
            leaf_name = jax.tree_util.keystr(path) or "<root>"
            _check_indices(f"{where}: row-sparse leaf {leaf_name}", leaf)


def shape_view(tree: Any) -> Any:
    """`tree` with each row-sparse leaf replaced by the ``jax.ShapeDtypeStruct`` of its dense array.

    For checks that compare a gradient tree with a state or parameter tree.

    Example:
      >>> shape_view({"emb": RowSparse(jnp.zeros(1, int), jnp.zeros((1, 2)), 3)})
      {'emb': ShapeDtypeStruct(shape=(3, 2), dtype=float32)}
    """
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if is_row_sparse(x) else x,
        tree,
        is_leaf=is_row_sparse,
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
    return g.with_values(jnp.where(_per_row(g.in_range(), update), update, 0)), new_stats


def map_values(fn: Callable[[jax.Array], jax.Array], tree: Any) -> Any:
    """``jax.tree.map(fn, tree)``, applying `fn` to the values of row-sparse leaves.

    For transformations that scale each update by a number (a learning rate, a clipping factor).

    Example:
      >>> tree = {"w": jnp.ones(2), "emb": RowSparse(jnp.array([1]), jnp.ones((1, 2)), 3)}
      >>> map_values(lambda u: -0.5 * u, tree)["emb"].values
      Array([[-0.5, -0.5]], dtype=float32)
    """
    return jax.tree.map(
        lambda x: x.with_values(fn(x.values)) if is_row_sparse(x) else fn(x),
        tree,
        is_leaf=is_row_sparse,
    )


def map_with_params(fn: Callable[[jax.Array, jax.Array], jax.Array], updates: Any, params: Any):
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


def global_norm(tree: Any) -> jax.Array:
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
        bad = sum(
            (jnp.sum(x.out_of_range(), dtype=jnp.int32) for x in leaves if is_row_sparse(x)),
            jnp.zeros([], jnp.int32),
        )
        dropped = state.dropped_rows + jnp.minimum(bad, INT32_MAX - state.dropped_rows)
        updates = jax.tree.map(prepare, updates, is_leaf=is_row_sparse)
        return updates, PrepareRowsState(dropped_rows=dropped)

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


class _TableLookup:
    """The table of an `Embed` inside `value_and_grad`: each call gathers the rows, adds the zero
    perturbation whose gradient is the row gradient, and records the ids it looked up."""

    def __init__(self, name: str, table: jax.Array, deltas: list | None):
        self.name, self.table, self.deltas, self.ids = name, table, deltas, []

    def __call__(self, ids: jax.Array) -> jax.Array:
        rows = jnp.take(self.table, ids, axis=0)
        if self.deltas is not None:
            rows = rows + self.deltas[len(self.ids)]
        self.ids.append(ids)
        return rows

    def __getitem__(self, key):
        raise TypeError(
            f"sparse.value_and_grad: the table {self.name} of a sparse.Embed was read as a dense "
            "array (e.g. Embed.attend, or a penalty on the table); its gradient would be dense. "
            "Use a plain nnx.Embed and nnx.value_and_grad for this model"
        )


class Embed(nnx.Embed):
    """A drop-in ``flax.nnx.Embed`` whose table `value_and_grad` differentiates row by row.

    Same constructor, parameters and output as ``nnx.Embed``; under `value_and_grad` the gradient
    of its ``embedding`` table is a `RowSparse` of the looked-up rows. Elsewhere (plain
    ``nnx.value_and_grad``, inference) it is ``nnx.Embed``.

    Example:
      >>> from flax import nnx
      >>> embed = Embed(num_embeddings=10, features=3, rngs=nnx.Rngs(0))
      >>> embed(jnp.array([[1, 2]])).shape
      (1, 2, 3)
    """

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        table = self.embedding.get_value()
        if not isinstance(table, _TableLookup):
            return super().__call__(inputs, out_sharding)
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError("Input type must be an integer or unsigned integer.")
        (rows,) = self.promote_dtype((table(inputs),), dtype=self.dtype, inexact=False)
        return rows


def _embed_tables(model: nnx.Module) -> list[tuple]:
    """The state paths of the tables of the `Embed` modules of `model`, in a fixed order."""
    paths = [path + ("embedding",) for path, m in nnx.iter_modules(model) if isinstance(m, Embed)]
    return sorted(paths, key=str)


def value_and_grad(f: Callable, *, has_aux: bool = False) -> Callable:
    r"""``nnx.value_and_grad(f)`` with a `RowSparse` gradient for the table of every `Embed`.

    Differentiates ``f(model, *args, **kwargs)`` with respect to the model's ``nnx.Param`` s, like
    ``nnx.value_and_grad(f)``, but differentiates each lookup of an `Embed` instead of its table:
    the lookup :math:`E_{\mathrm{ids}}` is computed as :math:`E_{\mathrm{ids}} + \Delta` with a zero
    :math:`\Delta` of the lookup's shape [K, D], so that

    .. math::

       \frac{\partial L}{\partial E} = \mathrm{RowSparse}\Big(\mathrm{ids},
       \frac{\partial L}{\partial \Delta}\Big), \qquad
       \frac{\partial L}{\partial E_r} = \sum_{k\,:\,\mathrm{ids}_k = r}
       \frac{\partial L}{\partial \Delta_k},

    and no :math:`V \times D` array is formed (a table's plain gradient is a scatter-add into
    :math:`V \times D` zeros). The lookup shapes are found by tracing `f` once more
    (``jax.eval_shape``: nothing runs). An `Embed` may be called several times (the ids are
    concatenated); reading its table as a dense array inside `f` raises ``TypeError``. Variables
    other than parameters that `f` updates (batch statistics, RNG counts) are written back to the
    model, as ``nnx.value_and_grad`` does.

    Reference: the sparse embedding gradients of ``torch.nn.Embedding(sparse=True)``,
    https://pytorch.org/docs/stable/generated/torch.nn.Embedding.html

    Args:
      f: ``f(model, *args, **kwargs) -> loss`` (or ``(loss, aux)`` with `has_aux`).
      has_aux: whether `f` returns ``(loss, aux)``.

    Returns:
      ``(model, *args, **kwargs) -> (value, grads)``, ``grads`` an ``nnx.State`` of ``nnx.Param``
      like ``nnx.grad``'s, ready for ``nnx.Optimizer.update``.

    Example:
      >>> from flax import nnx
      >>> embed = Embed(num_embeddings=1000, features=4, rngs=nnx.Rngs(0))
      >>> loss_fn = lambda m, ids: m(ids).sum()
      >>> loss, grads = value_and_grad(loss_fn)(embed, jnp.array([7, 3, 7]))
      >>> g = grads["embedding"].get_value()
      >>> g.shape, g.values.shape, g.coalesce().values[:2, 0]
      ((1000, 4), (3, 4), Array([1., 2.], dtype=float32))
    """

    def wrapped(model, *args, **kwargs):
        tables = _embed_tables(model)
        is_table = lambda path, _: tuple(path) in tables
        graphdef, table_state, params, rest = nnx.split(model, is_table, nnx.Param, ...)
        # Plain arrays: nnx.merge builds fresh Variables inside each trace.
        table_state, params, rest = nnx.as_pure((table_state, params, rest))
        table_arrays = dict(table_state.flat_state())

        def run(params, deltas, rest):
            lookups = [
                _TableLookup(str(path), table_arrays[path], None if deltas is None else deltas[i])
                for i, path in enumerate(tables)
            ]
            with_lookups = nnx.State.from_flat_path(list(zip(tables, lookups)))
            merged = nnx.merge(graphdef, with_lookups, params, rest)
            out = f(merged, *args, **kwargs)
            loss, aux = out if has_aux else (out, None)
            new_rest = nnx.as_pure(nnx.state(merged, nnx.Not(nnx.Param)))
            return loss, (aux, [lookup.ids for lookup in lookups], new_rest)

        shapes = jax.eval_shape(lambda p, r: run(p, None, r)[1][1], params, rest)
        deltas = [
            [
                jnp.zeros(s.shape + table_arrays[path].shape[1:], table_arrays[path].dtype)
                for s in calls
            ]
            for path, calls in zip(tables, shapes)
        ]
        grad_fn = jax.value_and_grad(run, argnums=(0, 1), has_aux=True)
        (loss, (aux, ids, new_rest)), (param_grads, delta_grads) = grad_fn(params, deltas, rest)
        nnx.update(model, new_rest)
        flat = dict(param_grads.flat_state())
        for path, calls, rows in zip(tables, ids, delta_grads):
            table = table_arrays[path]
            flat[path] = RowSparse(
                jnp.concatenate([i.reshape(-1) for i in calls] + [jnp.zeros(0, jnp.int32)]),
                jnp.concatenate(
                    [r.reshape((-1,) + table.shape[1:]) for r in rows]
                    + [jnp.zeros((0,) + table.shape[1:], table.dtype)]
                ),
                table.shape[0],
            )
        grads = nnx.state(model, nnx.Param)
        nnx.replace_by_pure_dict(grads, nnx.to_pure_dict(nnx.State.from_flat_path(flat)))
        return ((loss, aux) if has_aux else loss), grads

    return wrapped
