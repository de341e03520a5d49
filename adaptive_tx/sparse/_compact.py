"""The rows a catch-up step touches, as a compact state for the optimizer it wraps.

`catch_up` gathers the touched rows of a row-sparse leaf once, catches them up, and runs the
wrapped optimizer on them as a dense ``[K, ...]`` leaf: every subtree of the wrapped state shaped
like the parameters (its statistics) is cut down to those rows (`ParamTrees.map`), and the new
rows are scattered back once (`ParamTrees.expand`). `Caught` holds one leaf's rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adaptive_tx.sparse._type import is_row_sparse, per_row


def gather(rows):
    """Reads ``rows`` of an array (None: the array itself); out-of-range rows read as zeros."""
    if rows is None:
        return lambda a: a
    return lambda a: a.at[rows].get(mode="fill", fill_value=0)


class Caught(NamedTuple):
    """One leaf's touched rows, caught up.

    Attributes:
      g: the leaf's gradient (a coalesced `RowSparse`, or a dense array).
      rows: int32 ``[K]`` row indices, or None for a dense leaf (every row, in order).
      ok: bool ``[K]``, the rows in range (None for a dense leaf).
      grad: the gradient rows, ``[K, ...]`` (the dense array for a dense leaf).
      stale: the parameter rows before the catch-up.
      theta: float32, the parameter rows after it.
      known: ``{state path: rows}``, the caught-up rows of the statistics the catch-up moves.
      written: `write_order`'s function for the rows (None for a dense leaf).
    """

    g: Any
    rows: Any
    ok: Any
    grad: Any
    stale: jax.Array
    theta: jax.Array
    known: dict
    written: Any

    def compact(self, key, leaf):
        """The rows of state array ``leaf`` (at state path ``key``) the wrapped step reads."""
        if key in self.known:
            return self.known[key].astype(leaf.dtype)
        return gather(self.rows)(leaf)

    def scatter(self, full, rows):
        """``full`` with the touched rows set to ``rows`` (in place under a donated jit)."""
        if self.rows is None:
            return jnp.broadcast_to(rows, full.shape).astype(full.dtype)
        rows = jnp.broadcast_to(rows, self.rows.shape + full.shape[1:])
        return full.at[self.rows].set(
            self.written(rows).astype(full.dtype), mode="drop", unique_indices=True
        )

    def update(self, u):
        """The leaf's update: the wrapped step's on the caught-up rows plus the catch-up's move."""
        offset = self.theta - self.stale.astype(jnp.float32)
        values = u + offset.astype(u.dtype)
        if self.rows is None:
            return values
        return self.g.with_values(jnp.where(per_row(self.ok, values), values, 0))


def write_order(rows, num_rows, g, theta):
    """``written``: the rows a step writes, made to depend on every read of the old rows.

    XLA writes a donated table in place only if every read of the old table comes before the
    write in the data flow; otherwise it keeps the old table alive by copying it whole, an
    :math:`O(V)` copy a step. The last step (and decay mark) written is a constant ``t``, and a
    forward read through `CatchUp.rows` / `CatchUp.view` reaches the update only through the
    gradient, so neither is ordered by itself. The token ([K] float32) depends on the gradient
    values and on the caught-up rows (hence on every statistic, last step and mark read);
    ``written(r)`` is ``r`` on the rows the scatter writes and the token on the slots it drops
    (out of range), so no written value changes. (`jax.lax.optimization_barrier` does not order
    them: the CPU compiler removes it before copy insertion.)
    """
    values = g.values if is_row_sparse(g) else g
    flat = lambda x: jnp.reshape(x, (x.shape[0], -1))[:, 0].astype(jnp.float32)  # noqa: E731
    token = flat(values) + flat(theta)
    kept = (rows >= 0) & (rows < num_rows)

    def written(r):
        return jnp.where(per_row(kept, r), r, per_row(token, r).astype(r.dtype))

    return written


def path_key(path) -> tuple:
    """A path as a tuple of plain keys (dict keys, attribute names, indices)."""
    out = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                entry = getattr(entry, attr)
                break
        out.append(entry)
    return tuple(out)


class ParamTrees:
    """The subtrees of an optimizer state shaped like the parameters, leaf by leaf.

    A subtree counts if it has the parameters' tree structure and each array has its
    parameter's rows (the first dimension; ``()`` for a scalar parameter).
    """

    def __init__(self, state, treedef, param_leaves):
        self.treedef = treedef
        self.shapes = [jnp.shape(p)[:1] for p in param_leaves]
        self.with_paths, self.outer = jax.tree_util.tree_flatten_with_path(
            state, is_leaf=self._is_params
        )

    def _is_params(self, x) -> bool:
        leaves, treedef = jax.tree.flatten(x)
        return treedef == self.treedef and all(
            jnp.shape(leaf)[:1] == shape for leaf, shape in zip(leaves, self.shapes)
        )

    def map(self, caught):
        """The state with each touched leaf ``x`` of a parameter-shaped subtree at path ``key``
        replaced by ``caught[i].compact(key, x)``."""
        found, out = set(), []
        for path, sub in self.with_paths:
            if self._is_params(sub):
                key = path_key(path)
                found.add(key)
                leaves = self.treedef.flatten_up_to(sub)
                leaves = [x if c is None else c.compact(key, x) for x, c in zip(leaves, caught)]
                sub = self.treedef.unflatten(leaves)
            out.append(sub)
        # An invariant, not a user error: the caught-up statistics were read from these paths.
        missing = {k for c in caught if c is not None for k in c.known} - found
        assert not missing, f"catch-up statistics at {missing} not found in the state"
        return self.outer.unflatten(out)

    def expand(self, compact, caught):
        """The full state after the wrapped step on the compact one: touched rows scattered."""
        out = []
        for (_, old), new in zip(self.with_paths, self.outer.flatten_up_to(compact)):
            if self._is_params(old):
                olds, news = self.treedef.flatten_up_to(old), self.treedef.flatten_up_to(new)
                leaves = [
                    y if c is None else c.scatter(x, y) for x, y, c in zip(olds, news, caught)
                ]
                new = self.treedef.unflatten(leaves)
            out.append(new)
        return self.outer.unflatten(out)
