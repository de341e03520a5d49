"""Embedding tables sharded by rows over a mesh axis, updated row-sparsely on each shard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from adaptive_tx.sharding import state_shardings
from adaptive_tx.sparse._rows import apply_updates, prepare_rows
from adaptive_tx.sparse._type import RowSparse, check_rows, is_row_sparse, per_row

WHERE = "sparse.row_sharded"


class RowSharded(NamedTuple):
    """What `row_sharded` returns: the layout of the tables and their state, and the step.

    Attributes:
      init: ``init(params) -> state``, jitted: the state of ``optax.chain(prepare_rows(), tx)``,
        every statistic split by rows like its table (`adaptive_tx.state_shardings`).
      step: ``step(params, state, grads) -> (params, state)``: one update of every table from
        its `RowSparse` gradient, applied; jit it (with `param_shardings` and `state_shardings`
        as in/out shardings and donated params and state, each device then reads and writes its
        own touched rows in place).
      param_shardings: the `NamedSharding` of each table, rows split over the axis.
      state_shardings: the `NamedSharding` of every leaf of the state.
      grad_shardings: ``grad_shardings(grads)``, the `NamedSharding` of each gradient's
        ``indices``, ``values`` and ``intact`` arrays: split along the K looked-up rows (each
        device holds its own part of the batch's rows).

    Example:
      >>> import jax, adaptive_tx as atx
      >>> mesh = jax.make_mesh((1,), ("rows",))
      >>> sharded = atx.sparse.row_sharded(atx.adam(0.1), {"emb": jnp.zeros((8, 2))}, mesh, "rows")
      >>> tuple(sharded.param_shardings["emb"].spec)  # the table's rows split over "rows"
      ('rows',)
    """

    init: Callable[[optax.Params], optax.OptState]
    step: Callable[..., tuple[optax.Params, optax.OptState]]
    param_shardings: Any
    state_shardings: Any
    grad_shardings: Callable[[optax.Updates], Any]


def _axis_size(mesh: Any, axis: str | tuple[str, ...]) -> int:
    names = axis if isinstance(axis, tuple) else (axis,)
    missing = [name for name in names if name not in mesh.shape]
    if missing or not names:
        raise ValueError(
            f"{WHERE}: axis={axis!r} is not an axis of the mesh (its axes: "
            f"{tuple(mesh.shape)}); pass the name of the mesh axis to split the rows over"
        )
    size = 1
    for name in names:
        size *= mesh.shape[name]
    return size


def _check_tables(params: optax.Params, size: int, axis: Any) -> None:
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
        rows = p.shape[0] if len(p.shape) else None
        if rows is None or rows % size:
            raise ValueError(
                f"{WHERE}: parameter {jax.tree_util.keystr(path)} of shape {tuple(p.shape)} "
                f"cannot be split by rows over axis {axis!r} of size {size}: every leaf must "
                f"be a table whose number of rows is a multiple of {size}; pad the table with "
                "rows no id looks up, or keep the other parameters in their own step"
            )


def _check_grads(grads: optax.Updates, size: int) -> None:
    for path, g in jax.tree_util.tree_flatten_with_path(grads, is_leaf=is_row_sparse)[0]:
        name = jax.tree_util.keystr(path)
        if not is_row_sparse(g):
            raise ValueError(
                f"{WHERE}: gradient leaf {name} is dense (shape {jnp.shape(g)}), not a RowSparse: "
                "the row-sharded step updates tables from row-sparse gradients only "
                "(sparse.value_and_grad and sparse.Embed give them); update dense parameters "
                "in their own step"
            )
        if g.indices.shape[0] % size:
            raise ValueError(
                f"{WHERE}: gradient leaf {name} has {g.indices.shape[0]} rows, not a multiple "
                f"of the {size} devices that hold them; make the number of looked-up ids (the "
                "batch) a multiple of the device count"
            )


def _gather(g: RowSparse, axis: Any) -> RowSparse:
    """Every device's rows of the gradient, on every device (K indices and values)."""
    gather = lambda x: jax.lax.all_gather(x, axis, tiled=True)
    return RowSparse._trusted(
        gather(g.indices), gather(g.values), g.num_rows, g.unique_indices, gather(g.intact)
    )


def _own_rows(g: RowSparse, rows_per_shard: int, shard: jax.Array) -> RowSparse:
    """The rows of a coalesced gradient that this shard holds, in this shard's row numbers; the
    other slots become empty (index ``rows_per_shard``, zero values), keeping their positions."""
    local = g.indices - shard * rows_per_shard
    owned = (g.indices < g.num_rows) & (local >= 0) & (local < rows_per_shard)
    values = jnp.where(per_row(owned, g.values), g.values, 0)
    return RowSparse._trusted(jnp.where(owned, local, rows_per_shard), values, rows_per_shard, True)


def row_sharded(
    tx: optax.GradientTransformation,
    params: optax.Params,
    mesh: jax.sharding.Mesh,
    axis: str | tuple[str, ...],
) -> RowSharded:
    r"""The row-sparse step of embedding tables split by rows over a mesh axis.

    Each of the :math:`n` devices along `axis` holds :math:`V/n` consecutive rows of every table
    and of its statistics, and :math:`K/n` of the K looked-up rows of the gradient (its part of
    the batch). A step, under ``jax.shard_map``:

    1. all-gathers the K indices and values (:math:`K \times D` numbers, never the table);
    2. runs `prepare_rows` on them, the same on every device: repeated rows summed, bad indices
       dropped and counted once;
    3. keeps the rows this device holds, renumbered from its first row, the other slots empty;
    4. runs ``tx.update`` and `apply_updates` on the local shard: `apply_rows` gathers, steps and
       scatters the device's own touched rows only.

    .. math::

       (u_r, s_r) \leftarrow \mathrm{apply\_rule}(g_r, s_r, t) \quad \text{on the device that
       holds row } r, \text{ for each touched row } r; \quad \text{other rows unchanged,}

    the lazy step of one device with ``optax.chain(prepare_rows(), tx)`` (equal to it bit for
    bit, stochastic rounding included: each row keeps its slot among the K). The table is never
    made dense nor gathered; per device, a step reads and writes at most its own touched rows,
    and handles the K gathered indices (the sort that sums repeats is done on every device).

    `tx` must update each row from that row's gradient and statistics (and scalars such as the
    step count): every rule of this library (the aliases with elementwise or 8-bit table state,
    `adaptive_tx.rowwise_adagrad`), with the learning rate, weight decay and `trace`. A
    transformation that reduces over the rows (``clip_by_global_norm``) would see only the
    device's rows: clip the gradient before the step. A state scalar computed from the gradient
    (the non-finite guard's counters) differs between devices and is refused when the step is
    traced (``jax.shard_map``'s replication check).

    Reference: the row-wise sharding of embedding tables in TPU embeddings and torchrec
    (https://pytorch.org/torchrec/concepts.html).

    Args:
      tx: the transformation, e.g. ``adaptive_tx.adam(1e-3)``; `prepare_rows` is put before it.
      params: the tables (arrays or ``jax.ShapeDtypeStruct``), each with a number of rows that
        the axis size divides.
      mesh: the device mesh.
      axis: the mesh axis (or tuple of axes) that splits the rows and the batch.

    Returns:
      A `RowSharded`: ``init``, ``step`` and the shardings of tables, state and gradients.

    Example:
      >>> import jax, numpy as np, adaptive_tx as atx
      >>> mesh = jax.make_mesh((1,), ("rows",))
      >>> table = {"emb": jnp.zeros((8, 2))}
      >>> sharded = atx.sparse.row_sharded(atx.adam(0.1), table, mesh, "rows")
      >>> state = sharded.init(table)
      >>> g = {"emb": atx.RowSparse(jnp.array([3, 3]), jnp.ones((2, 2)), num_rows=8)}
      >>> table, state = jax.jit(sharded.step)(table, state, g)
      >>> table["emb"][:, 0]
      Array([ 0. ,  0. ,  0. , -0.1,  0. ,  0. ,  0. ,  0. ], dtype=float32)
    """
    size = _axis_size(mesh, axis)
    _check_tables(params, size, axis)
    prepare = prepare_rows()
    chain = optax.chain(prepare, tx)
    param_sh = jax.tree.map(lambda p: NamedSharding(mesh, P(axis)), params)
    state_sh = state_shardings(chain, params, param_sh)
    spec = lambda sh: sh.spec
    rows_of = jax.tree.map(lambda p: p.shape[0] // size, params)

    def grad_shardings(grads):
        return jax.tree.map(lambda _: NamedSharding(mesh, P(axis)), grads)

    def local_step(params, state, grads):
        prepare_state, inner_state = state
        gathered = jax.tree.map(lambda g: _gather(g, axis), grads, is_leaf=is_row_sparse)
        prepared, prepare_state = prepare.update(gathered, prepare_state)
        # The count comes from the gathered indices, the same on every device; the maximum
        # marks it as replicated for shard_map.
        prepare_state = jax.tree.map(lambda x: jax.lax.pmax(x, axis), prepare_state)
        shard = jax.lax.axis_index(axis)
        local = jax.tree.map(
            lambda g, rows: _own_rows(g, rows, shard), prepared, rows_of, is_leaf=is_row_sparse
        )
        updates, inner_state = tx.update(local, inner_state, params)
        return apply_updates(params, updates), (prepare_state, inner_state)

    def step(params, state, grads):
        _check_grads(grads, size)
        # Outside jit, bad indices raise as on one device (and under jit: changed index dtypes).
        # Arrays spread over several processes cannot be read here; the step drops and counts.
        concrete = [x for x in jax.tree.leaves(grads) if not isinstance(x, jax.core.Tracer)]
        if all(getattr(x, "is_fully_addressable", True) for x in concrete):
            check_rows(WHERE, grads)
        p_spec, s_spec = jax.tree.map(spec, param_sh), jax.tree.map(spec, state_sh)
        g_sh = grad_shardings(grads)
        sharded = jax.shard_map(
            local_step,
            mesh=mesh,
            in_specs=(p_spec, s_spec, jax.tree.map(spec, g_sh)),
            out_specs=(p_spec, s_spec),
        )
        # Laid out as the step reads them (a no-op for arrays already so; under explicit mesh
        # axes, where an array's sharding is part of its type, a reshard).
        return sharded(*jax.device_put((params, state, grads), (param_sh, state_sh, g_sh)))

    init = jax.jit(chain.init, out_shardings=state_sh)
    return RowSharded(init, step, param_sh, state_sh, grad_shardings)
