"""Embedding tables sharded by rows over a mesh axis, updated row-sparsely on each shard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import math

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from adaptive_tx.sharding import state_shardings
from adaptive_tx.sparse._rows import _count_dropped, apply_updates, prepare_rows
from adaptive_tx.sparse._type import RowSparse, check_rows, is_row_sparse, per_row

WHERE = "sparse.row_sharded"


class RowShardedStats(NamedTuple):
    """The last part of the row-sharded state: how often a device held more rows than its slots.

    Attributes:
      fallback_steps: int32 scalar, the steps in which some device held more looked-up rows
        than its slots, and so sorted all K and stepped its rows in chunks (exact, slower; see
        `row_sharded`).
      most_owned: int32 scalar, the most looked-up rows (repeats counted) that one device held
        in one step so far: a capacity of at least ``most_owned / (K / n)`` avoids the fallback.

    Example:
      >>> RowShardedStats(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32)).fallback_steps
      Array(0, dtype=int32)
    """

    fallback_steps: jax.Array
    most_owned: jax.Array


class RowSharded(NamedTuple):
    """What `row_sharded` returns: the layout of the tables and their state, and the step.

    Attributes:
      init: ``init(params) -> state``, jitted: the state of ``optax.chain(prepare_rows(), tx)``
        (``state[0]``, ``state[1]``), every statistic split by rows like its table
        (`adaptive_tx.state_shardings`), then a `RowShardedStats` (``state[2]``, replicated).
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


class _Packed(NamedTuple):
    """One device's distinct looked-up rows of a leaf, in increasing order first in `indices`
    (the rest empty), to be stepped `slots` at a time."""

    indices: jax.Array  # [ceil(K / slots) * slots] local row numbers; rows_per_shard: empty
    compact: jax.Array  # [slots, ...] the summed values of those rows, when they fit the slots
    gathered: RowSparse  # the K looked-up rows, for the chunks of a device over its slots
    local: jax.Array  # [K] their row numbers in this shard; rows_per_shard: not held here
    held: jax.Array  # looked-up rows (repeats counted) the device holds
    fits: jax.Array  # at most `slots` of them
    chunks: jax.Array  # ceil(distinct rows / slots), at least 1
    slots: int

    def chunk(self, i: jax.Array, rows_per_shard: int) -> RowSparse:
        indices = jax.lax.dynamic_slice_in_dim(self.indices, i * self.slots, self.slots)

        def summed(_):
            # This chunk's rows summed over all K, in the order of the K (as one device sums).
            g = self.gathered
            at = jnp.clip(jnp.searchsorted(indices, self.local), 0, self.slots - 1)
            match = (self.local < rows_per_shard) & (indices[at] == self.local)
            values = jnp.where(per_row(match, g.values), g.values, 0)
            return jax.ops.segment_sum(values, jnp.where(match, at, self.slots), self.slots)

        values = jax.lax.cond(self.fits, lambda _: self.compact, summed, None)
        return RowSparse._trusted(indices, values, rows_per_shard, True)


def _packed(g: RowSparse, rows_per_shard: int, shard: jax.Array, slots: int) -> _Packed:
    """The rows of gathered `g` that this shard holds, coalesced: within `slots` slots, the held
    entries are moved there (a pass over the K indices) and summed there (a sort of `slots`
    indices); beyond, the held indices are sorted among all K and each chunk's rows summed over
    the K (exact, as slow as one device)."""
    num = g.indices.shape[0]
    local = g.indices - shard * rows_per_shard
    owned = g.in_range() & (local >= 0) & (local < rows_per_shard)
    local = jnp.where(owned, local, rows_per_shard)
    held = jnp.sum(owned, dtype=jnp.int32)
    total = -(-num // slots) * slots  # room for every distinct row, in whole chunks
    where = jnp.nonzero(owned, size=slots, fill_value=num)[0]
    values = g.values.at[where].get(mode="fill", fill_value=0)
    indices = local.at[where].get(mode="fill", fill_value=rows_per_shard)
    compact = RowSparse._trusted(indices, values, rows_per_shard, False).coalesce()
    fits = held <= slots
    indices = jax.lax.cond(
        fits,
        lambda _: _pad(compact.indices, total, rows_per_shard),
        lambda _: jnp.unique(local, size=total, fill_value=rows_per_shard),
        None,
    )
    distinct = jnp.sum(indices < rows_per_shard, dtype=jnp.int32)
    chunks = jnp.maximum(1, -(-distinct // slots))
    return _Packed(indices, compact.values, g, local, held, fits, chunks, slots)


def _pad(x: jax.Array, length: int, fill: Any) -> jax.Array:
    """`x` along its first axis, filled up to `length`."""
    return jnp.pad(x, [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1), constant_values=fill)


def _slots(looked_up: int, size: int, capacity: float | None) -> int:
    """The slots a device steps: ``ceil(capacity * K / n)``, at most K (None: K)."""
    if capacity is None:
        return looked_up
    return min(looked_up, math.ceil(capacity * looked_up / size))


def _check_capacity(capacity: Any) -> None:
    ok = isinstance(capacity, (int, float)) and not isinstance(capacity, bool)
    if capacity is not None and not (ok and math.isfinite(capacity) and capacity > 0):
        raise ValueError(
            f"{WHERE}: capacity={capacity!r} must be a finite number > 0 (the slots of a "
            "device as a multiple of its even share K / n of the looked-up rows; 2.0 by "
            "default) or None (K slots); pass e.g. capacity=2.0"
        )


def row_sharded(
    tx: optax.GradientTransformation,
    params: optax.Params,
    mesh: jax.sharding.Mesh,
    axis: str | tuple[str, ...],
    capacity: float | None = 2.0,
) -> RowSharded:
    r"""The row-sparse step of embedding tables split by rows over a mesh axis.

    Each of the :math:`n` devices along `axis` holds :math:`V/n` consecutive rows of every table
    and of its statistics, and :math:`K/n` of the K looked-up rows of the gradient (its part of
    the batch). A step, under ``jax.shard_map``:

    1. all-gathers the K indices and values (:math:`K \times D` numbers, never the table), and
       counts the bad indices once (the same count on every device);
    2. keeps the looked-up rows this device holds, in order, in :math:`C = \lceil
       \mathrm{capacity} \cdot K/n \rceil` slots, renumbered from its first row (a pass over
       the K indices, no sort);
    3. sums repeated rows among the C slots (the sort of `prepare_rows`, on C indices);
    4. runs ``tx.update`` and `apply_updates` on the local shard: `apply_rows` gathers, steps and
       scatters the device's own touched rows only (C slots of :math:`D` numbers).

    .. math::

       (u_r, s_r) \leftarrow \mathrm{apply\_rule}(g_r, s_r, t) \quad \text{on the device that
       holds row } r, \text{ for each touched row } r; \quad \text{other rows unchanged,}

    the lazy step of one device with ``optax.chain(prepare_rows(), tx)``. A device that holds
    more than C looked-up rows in a step (skewed ids: all K in its rows) sums them over all K
    (a sort of K indices) and steps its distinct rows C at a time, in as many chunks as needed
    (each chunk reads the rows' statistics as the previous chunks left them, and the scalars of
    the state, such as the step count, as the step found them): the same result, at the cost of
    a K sort and up to :math:`\lceil K/C \rceil` chunks on that step. ``state[2].fallback_steps``
    counts such steps and ``state[2].most_owned`` tells the capacity that would have avoided
    them. No row is ever dropped. The result equals the one-device step bit for bit, except
    under stochastic rounding (``"bfloat16_sr"``, the 8-bit blocks' default), whose random bits
    follow a row's slot among the C (on one device: among the K): a row's rounding may go the
    other way than on one device, each stored value still one of the two neighbours of the same
    float32 value, unbiased (chunks of one step reuse the same bits). Per device, a step moves
    the :math:`K \times D` gathered numbers and passes once over the K indices; the sort, the
    gathers, the rule and the scatters follow C, about :math:`2K/n`. The table and its
    statistics are updated in place (no copy of the device's rows).

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
      capacity: the slots C of a device as a multiple of its share :math:`K/n` (> 0; at most K
        slots); None: K slots (every device steps at most K slots, never in chunks).

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
      >>> int(state[2].fallback_steps), int(state[2].most_owned)
      (0, 2)
    """
    size = _axis_size(mesh, axis)
    _check_tables(params, size, axis)
    _check_capacity(capacity)
    prepare = prepare_rows()
    chain = optax.chain(prepare, tx)
    param_sh = jax.tree.map(lambda p: NamedSharding(mesh, P(axis)), params)
    replicated = NamedSharding(mesh, P())
    state_sh = (*state_shardings(chain, params, param_sh), RowShardedStats(replicated, replicated))
    spec = lambda sh: sh.spec
    rows_of = jax.tree.map(lambda p: p.shape[0] // size, params)
    is_rows = is_row_sparse

    def grad_shardings(grads):
        return jax.tree.map(lambda _: NamedSharding(mesh, P(axis)), grads)

    table_leaf = jax.tree.map(lambda sh: bool(sh.spec) and sh.spec[0] == axis, state_sh[1])

    def update(params, inner_state, original, local):
        # Per-row statistics carry over from chunk to chunk; every other leaf of the state
        # (the step count) is computed from the step's incoming state, once per step.
        inner_state = jax.tree.map(
            lambda cur, old, table: cur if table else old, inner_state, original, table_leaf
        )
        updates, inner_state = tx.update(local, inner_state, params)
        return apply_updates(params, updates), inner_state

    def local_step(params, state, grads):
        prepare_state, inner_state, stats = state
        gathered = jax.tree.map(lambda g: _gather(g, axis), grads, is_leaf=is_rows)
        # The count comes from the gathered indices, the same on every device; the maximum
        # marks it as replicated for shard_map.
        prepare_state = _count_dropped(prepare_state, jax.tree.leaves(gathered, is_leaf=is_rows))
        prepare_state = jax.tree.map(lambda x: jax.lax.pmax(x, axis), prepare_state)
        shard = jax.lax.axis_index(axis)
        leaves, treedef = jax.tree.flatten(gathered, is_leaf=is_rows)
        rows = treedef.flatten_up_to(rows_of)
        packed = [
            _packed(g, r, shard, _slots(g.indices.shape[0], size, capacity))
            for g, r in zip(leaves, rows)
        ]
        chunks = jnp.max(jnp.stack([p.chunks for p in packed]))

        def body(i, carry):
            local = treedef.unflatten([p.chunk(i, r) for p, r in zip(packed, rows)])
            return update(*carry, inner_state, local)

        # One chunk of C slots when every device holds at most C looked-up rows (the usual
        # case); more, one after the other, on a device that holds more distinct rows.
        params, inner_state = jax.lax.fori_loop(0, chunks, body, (params, inner_state))
        most = jnp.max(jnp.stack([p.held for p in packed]))
        fits = jnp.stack([p.fits for p in packed])
        stats = RowShardedStats(
            stats.fallback_steps + jax.lax.pmax(jnp.any(~fits).astype(jnp.int32), axis),
            jnp.maximum(stats.most_owned, jax.lax.pmax(most, axis)),
        )
        return params, (prepare_state, inner_state, stats)

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

    def init_fn(params):
        zero = jnp.zeros([], jnp.int32)
        return (*chain.init(params), RowShardedStats(zero, zero))

    init = jax.jit(init_fn, out_shardings=state_sh)
    return RowSharded(init, step, param_sh, state_sh, grad_shardings)
