"""The ``flax.nnx`` integration: `Embed` and `value_and_grad` (flax is imported here only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from adaptive_tx.sparse._type import RowSparse


class _TableLookup:
    """The table of an `Embed` inside `value_and_grad`: each call gathers the rows, adds the zero
    perturbation whose gradient is the row gradient, and records the ids it looked up."""

    def __init__(self, path: tuple, table: jax.Array, deltas: list | None, view=None):
        self.name, self.table, self.deltas, self.ids = str(path), table, deltas, []
        self.path, self.view = path, view

    def __call__(self, ids: jax.Array) -> jax.Array:
        # A negative id counts from the end, as nnx.Embed's jnp.take reads it (and trains it).
        num_rows = self.table.shape[0]
        ids = jnp.where((ids < 0) & (ids >= -num_rows), ids + num_rows, ids)
        if self.view is None:
            rows = jnp.take(self.table, ids, axis=0)
        else:
            rows = self.view(self.path, self.table, ids)
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


def value_and_grad(f: Callable, *, has_aux: bool = False, view: Callable | None = None) -> Callable:
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
      view: None (the lookups read the table), or ``(path, table, ids) -> rows``: what a lookup
        of the table at state path ``path`` reads instead, e.g. the caught-up rows of
        `adaptive_tx.sparse.catch_up` (``tx.view(nnx.as_pure(optimizer.opt_state))``), so that
        the forward pass sees the rows dense training would see. The gradient is taken with
        respect to the rows read.

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
                _TableLookup(
                    path, table_arrays[path], None if deltas is None else deltas[i], view
                )
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


def flush(optimizer: nnx.Optimizer, model: nnx.Module, tx: Any = None) -> None:
    """Bring every row of ``model``'s parameters and ``optimizer``'s state up to date, in place.

    For an ``nnx.Optimizer`` whose transformation is `adaptive_tx.sparse.catch_up`, or holds one
    (a chain, ``optax.partition``, ...: pass that `CatchUp` as ``tx``): the rows not looked up
    since their last step are stale until flushed (`CatchUp.flush`); call this before
    evaluating, exporting or checkpointing the model. Other transformations raise ``TypeError``.

    Args:
      optimizer: the ``nnx.Optimizer``.
      model: its model.
      tx: None if ``optimizer.tx`` is the `CatchUp` itself; else the `CatchUp` inside it (its
        state is found in the optimizer's state wherever it is nested).

    Example:
      >>> import adaptive_tx as atx
      >>> from flax import nnx
      >>> embed = Embed(num_embeddings=4, features=2, rngs=nnx.Rngs(0))
      >>> optimizer = nnx.Optimizer(embed, atx.sparse.catch_up(atx.adam, 0.1), wrt=nnx.Param)
      >>> _, grads = value_and_grad(lambda m, ids: m(ids).sum())(embed, jnp.array([1]))
      >>> _ = optimizer.update(embed, grads)  # row 1 moves; rows 0, 2, 3 see zero gradients
      >>> flush(optimizer, embed)
      >>> optimizer.opt_state.last_step["embedding"][...]
      Array([1, 1, 1, 1], dtype=int32)
    """
    from adaptive_tx.sparse._catch_up import CatchUp, CatchUpState

    state = nnx.as_pure(optimizer.opt_state)
    if tx is None and isinstance(optimizer.tx, CatchUp):
        tx = optimizer.tx
    if not isinstance(tx, CatchUp):
        holds = lambda x: isinstance(x, CatchUpState)  # noqa: E731
        if tx is None and any(holds(x) for x in jax.tree.leaves(state, is_leaf=holds)):
            raise TypeError(
                f"sparse.flush: the optimizer's transformation is {type(optimizer.tx).__name__}, "
                "which holds a sparse.catch_up: pass that catch_up transformation as "
                "flush(optimizer, model, tx=...)"
            )
        raise TypeError(
            f"sparse.flush: the optimizer's transformation is {type(optimizer.tx).__name__}, not "
            "sparse.catch_up: only catch-up updates leave stale rows to flush (lazy ones are "
            "final)"
        )
    params = nnx.as_pure(nnx.state(model, optimizer.wrt))
    new_params, new_state = tx.flush(state, params)
    nnx.update(model, new_params)
    nnx.update(optimizer.opt_state, nnx.state(new_state))
