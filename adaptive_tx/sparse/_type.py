"""The row-sparse gradient type, `RowSparse`, and the checks every consumer of it runs."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

INT32_MAX = np.iinfo(np.int32).max
WRAP_HINT = (
    "optax transformations that map over every array of the tree (optax.clip, optax.scale, "
    "optax.clip_by_global_norm, ...) treat the indices as gradient values. Wrap such a "
    "transformation: atx.sparse.on_values(tx) runs it on the rows' values only (see the "
    "compatibility table in the row-sparse guide), or put atx.sparse.prepare_rows(lazy=False) "
    "before it for dense leaves"
)


_NARROW = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.uint8, np.uint16))


def _narrow_indices(indices: Any, num_rows: int) -> jax.Array:
    """int32 indices; wider ones out of int32 range raise (concrete) or become -1 (traced)."""
    fits = isinstance(indices, jax.Array) and indices.dtype in _NARROW
    # Host ids (numpy, lists) and concrete wide device ids are range-checked on the host; device
    # ids that fit int32 are not copied to the host.
    host = None if isinstance(indices, jax.core.Tracer) or fits else np.asarray(indices)
    if host is not None:
        if not np.issubdtype(host.dtype, np.integer) or host.ndim != 1:
            raise TypeError(
                f"RowSparse: indices must be a 1-d integer array, got "
                f"{jax.dtypes.canonicalize_dtype(host.dtype)} of shape {host.shape}"
            )
        wide = host.astype(np.int64) if host.dtype != np.uint64 else host
        too_wide = (wide < np.iinfo(np.int32).min) | (wide > INT32_MAX)
        if host.dtype == np.uint64:
            too_wide = host > INT32_MAX
        if np.any(too_wide):
            at = int(np.flatnonzero(too_wide)[0])
            raise IndexError(
                f"RowSparse: row index {host[at]} (at position {at}) is outside [0, {num_rows}) "
                "and does not fit in int32; hashed ids must be reduced modulo the table size "
                "before the lookup"
            )
        return jnp.asarray(host.astype(np.int32))
    if not jnp.issubdtype(indices.dtype, jnp.integer) or indices.ndim != 1:
        raise TypeError(
            f"RowSparse: indices must be a 1-d integer array, got {indices.dtype} of shape "
            f"{indices.shape}"
        )
    if jnp.iinfo(indices.dtype).bits > 32 or indices.dtype == jnp.uint32:
        # Traced wide ids: an id outside [0, num_rows) becomes -1 (dropped and counted), never
        # another row by wrapping.
        indices = jnp.where((indices >= 0) & (indices < num_rows), indices, -1)
    return indices.astype(jnp.int32)


@jax.tree_util.register_pytree_with_keys_class
class RowSparse:
    r"""A gradient that is zero outside some rows of a table: ``indices`` [K] and ``values`` [K, ...].

    It stands for the dense array of shape ``(num_rows,) + values.shape[1:]``

    .. math:: G_r = \sum_{k\,:\,\mathrm{indices}_k = r} \mathrm{values}_k ,

    the gradient that ``torch.nn.Embedding(sparse=True)`` returns as a sparse COO tensor
    (https://pytorch.org/docs/stable/generated/torch.nn.Embedding.html) and TensorFlow as
    ``IndexedSlices``. It is a pytree (children ``indices``, ``values`` and ``intact``, a bool [K]
    array that is True where the leaf was made), so it crosses ``jit``, and every transformation
    of this library accepts it as a leaf of a gradient tree. A transformation that maps over every
    array of a tree changes ``intact``'s dtype or values along with the indices; every consumer
    checks it (`check_rows`), so indices changed that way are never read as rows.

    Args:
      indices: integer row indices, shape [K], stored as int32; they may repeat (the rows are
        summed). Indices outside ``[0, num_rows)`` are dropped (see the module docstring); wider
        integers (int64 hashed ids) that do not fit int32 raise ``IndexError`` (under ``jit``:
        dropped), never wrap onto another row.
      values: the gradient rows, shape [K, ...], any floating dtype.
      num_rows: V, the number of rows of the table.
      unique_indices: a promise that the in-range indices are distinct, which `coalesce` makes
        and which lets the rules skip sorting; leave False unless you know. It is checked when
        the indices are concrete (``ValueError`` on a repeat); under ``jit`` it is ignored (the
        rows are summed by one sort), so a broken promise never doubles a step. In a coalesced
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

    def __init__(
        self, indices: ArrayLike, values: ArrayLike, num_rows: int, unique_indices: bool = False
    ):
        if isinstance(num_rows, bool) or not isinstance(num_rows, (int, np.integer)):
            raise TypeError(f"RowSparse: num_rows must be an int, got num_rows={num_rows!r}")
        if not 0 <= num_rows <= INT32_MAX:
            raise ValueError(f"RowSparse: num_rows must be in [0, 2**31), got num_rows={num_rows}")
        indices, values = _narrow_indices(indices, int(num_rows)), jnp.asarray(values)
        if values.ndim < 1 or values.shape[0] != indices.shape[0]:
            raise ValueError(
                f"RowSparse: values must have one row per index ({indices.shape[0]}), got shape "
                f"{values.shape}"
            )
        if not jnp.issubdtype(values.dtype, jnp.inexact):
            raise TypeError(f"RowSparse: values must be floating, got {values.dtype}")
        unique = bool(unique_indices)
        if unique and not isinstance(indices, jax.core.Tracer):
            host = np.asarray(indices)
            valid = host[(host >= 0) & (host < num_rows)]
            values_seen, counts = np.unique(valid, return_counts=True)
            if np.any(counts > 1):
                raise ValueError(
                    f"RowSparse: unique_indices=True but row {values_seen[counts > 1][0]} "
                    f"appears {counts.max()} times; pass unique_indices=False (repeated rows "
                    "are then summed)"
                )
        elif unique:
            unique = False  # an unverifiable promise is not trusted
        self._set(indices, values, jnp.ones(indices.shape, bool), int(num_rows), unique)

    def _set(self, indices, values, intact, num_rows, unique_indices):
        self.indices, self.values, self.intact = indices, values, intact
        self.num_rows, self.unique_indices = num_rows, unique_indices

    @classmethod
    def _trusted(cls, indices, values, num_rows, unique_indices, intact=None) -> RowSparse:
        """A RowSparse the library built from checked parts (no checks, the flag kept)."""
        rows = object.__new__(cls)
        intact = jnp.ones(indices.shape, bool) if intact is None else intact
        rows._set(indices, values, intact, num_rows, unique_indices)
        return rows

    def tree_flatten_with_keys(self):
        children = (
            (jax.tree_util.GetAttrKey("indices"), self.indices),
            (jax.tree_util.GetAttrKey("values"), self.values),
            (jax.tree_util.GetAttrKey("intact"), self.intact),
        )
        return children, (self.num_rows, self.unique_indices)

    @classmethod
    def tree_unflatten(cls, aux, children):
        # No checks: JAX rebuilds pytrees with tracers, None or sentinel objects as children.
        # One exception: labels. A label function mapped over a gradient tree
        # (optax.multi_transform) labels a RowSparse's children; the leaf takes its values'
        # label, as the dense table would (same ndim, dtype and path).
        if all(isinstance(child, str) for child in children):
            return children[1]
        rows = object.__new__(cls)
        rows._set(*children, *aux)
        return rows

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the dense array, ``(num_rows,) + values.shape[1:]``."""
        return (self.num_rows,) + tuple(self.values.shape[1:])

    @property
    def ndim(self) -> int:
        """The number of dimensions of the dense array."""
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the values."""
        return self.values.dtype

    def __repr__(self) -> str:
        return (
            f"RowSparse(num_rows={self.num_rows}, rows={self.indices.shape[0]}, "
            f"shape={self.shape}, dtype={self.dtype}, unique_indices={self.unique_indices})"
        )

    def with_values(self, values: ArrayLike) -> RowSparse:
        """The same rows with other values (same number of rows; the indices are kept)."""
        values = jnp.asarray(values)
        if values.ndim < 1 or values.shape[0] != self.indices.shape[0]:
            raise ValueError(
                f"RowSparse.with_values: values must have one row per index "
                f"({self.indices.shape[0]}), got shape {values.shape}"
            )
        return RowSparse._trusted(
            self.indices, values, self.num_rows, self.unique_indices, self.intact
        )

    def in_range(self) -> jax.Array:
        """A bool [K] array: which indices lie in ``[0, num_rows)`` (and are intact)."""
        return (self.indices >= 0) & (self.indices < self.num_rows) & self.intact

    def out_of_range(self) -> jax.Array:
        """A bool [K] array: which indices are errors (not in range, nor a coalesced empty slot)."""
        empty_slot = self.unique_indices & (self.indices == self.num_rows) & self.intact
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
        values = jnp.where(per_row(valid, self.values), self.values, 0)
        num = indices.shape[0]
        if self.unique_indices or num == 0:
            return RowSparse._trusted(indices, values, self.num_rows, True)
        # Sort the indices alone (a one-operand integer sort is several times faster than an
        # argsort on CPU), number the distinct rows, find each entry's row by binary search, and
        # sum the values into their row's slot without permuting them.
        sorted_indices = jnp.sort(indices)
        starts = jnp.concatenate([jnp.ones(1, bool), sorted_indices[1:] != sorted_indices[:-1]])
        slot_of_sorted = jnp.cumsum(starts, dtype=jnp.int32) - 1
        slot = slot_of_sorted[jnp.searchsorted(sorted_indices, indices)]
        values = jax.ops.segment_sum(values, slot, num_segments=num)
        indices = jnp.full(num, self.num_rows, jnp.int32).at[slot_of_sorted].set(sorted_indices)
        return RowSparse._trusted(indices, values, self.num_rows, True)

    def todense(self) -> jax.Array:
        """The dense array: zeros, plus the summed rows (outside ``jit``, bad indices raise).

        Example:
          >>> RowSparse(jnp.array([1]), jnp.array([[3.0]]), num_rows=2).todense()
          Array([[0.],
                 [3.]], dtype=float32)
        """
        check_leaf("RowSparse.todense", "", self)
        rows = self.coalesce()
        dense = jnp.zeros(self.shape, self.dtype)
        return dense.at[rows.indices].set(rows.values, mode="drop", unique_indices=True)

    def __radd__(self, other: ArrayLike) -> jax.Array:
        """``dense + row_sparse``: the dense array with the rows added (what ``optax.apply_updates``
        computes). Only the K rows are read and written (repeated rows are added one after the
        other); the result has ``other``'s dtype promoted with the values', as a dense sum has.
        Bad indices raise ``IndexError`` outside ``jit`` and are dropped inside it."""
        check_leaf("RowSparse.__radd__ (optax.apply_updates)", "", self)
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


def per_row(mask: jax.Array, values: jax.Array) -> jax.Array:
    """A [K] mask shaped to broadcast against [K, ...] values."""
    return mask.reshape(mask.shape + (1,) * (values.ndim - 1))


def check_leaf(where: str, leaf_name: str, rows: RowSparse) -> None:
    """Raises if `rows` is not a valid row-sparse leaf: its indices changed (trace time: dtype;
    concrete: values) or an index is out of range (concrete only; under jit it is dropped)."""
    name = f"{where}: row-sparse leaf {leaf_name}".rstrip() if leaf_name else where
    indices, intact = rows.indices, rows.intact
    dtypes = (jnp.result_type(indices), jnp.result_type(intact))
    if dtypes != (jnp.dtype(jnp.int32), jnp.dtype(bool)) or jnp.ndim(indices) != 1:
        raise TypeError(
            f"{name} has indices of dtype {dtypes[0]} and intact flags of dtype {dtypes[1]} "
            f"(a RowSparse is made with int32 and bool): a transformation before {where} "
            f"mapped over them. {WRAP_HINT}"
        )
    if isinstance(indices, jax.core.Tracer) or isinstance(intact, jax.core.Tracer):
        return
    broken = np.flatnonzero(~np.asarray(intact))
    if broken.size:
        raise ValueError(
            f"{name} has changed indices ({broken.size} of {indices.shape[0]} rows, first at "
            f"position {broken[0]}): a transformation before {where} rewrote them. {WRAP_HINT}"
        )
    host = np.asarray(indices)
    empty_slot = rows.unique_indices & (host == rows.num_rows)
    bad = np.flatnonzero(~((host >= 0) & (host < rows.num_rows)) & ~empty_slot)
    if bad.size:
        raise IndexError(
            f"{name} has row index {host[bad[0]]} (at position {bad[0]}) outside "
            f"[0, {rows.num_rows}); {bad.size} of its {host.size} indices are out of range"
        )


def check_rows(where: str, tree: optax.Updates) -> None:
    """Checks every row-sparse leaf of `tree`: intact indices (else an error naming the leaf and
    the fix), and in range (else ``IndexError`` naming the leaf and the index).

    A transformation that maps over every array of a tree changes the indices (a float dtype at
    trace time, or their ``intact`` flags); that raises here, under ``jit`` too when the dtype
    changed. Out-of-range indices raise only when concrete (outside ``jit``); under ``jit`` they
    are dropped instead, and `prepare_rows` counts them.

    Example:
      >>> check_rows("update", {"emb": RowSparse(jnp.array([0, 7]), jnp.ones((2, 1)), 5)})
      Traceback (most recent call last):
      ...
      IndexError: update: row-sparse leaf ['emb'] has row index 7 (at position 1) outside [0, 5); 1 of its 2 indices are out of range
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_row_sparse)[0]:
        if is_row_sparse(leaf):
            check_leaf(where, jax.tree_util.keystr(path) or "<root>", leaf)


def shape_view(tree: optax.Updates) -> Any:
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
