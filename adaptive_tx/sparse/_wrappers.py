"""Running optax's own transformations on row-sparse leaves: `on_values` and `multi_steps`."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from adaptive_tx.sparse._type import RowSparse, check_rows, is_row_sparse, per_row


def on_values(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    r"""Runs an elementwise optax transformation on the values of the row-sparse leaves only.

    Each `RowSparse` leaf is coalesced (repeated rows summed, as in the dense gradient) and
    `inner` sees its rows' values :math:`g_R` [K, ...] in its place (with the same rows of the
    parameter, :math:`\theta_R`, for transformations that read parameters); its indices pass
    around `inner` untouched. Dense leaves go to `inner` as they are, in the same call, so a
    transformation that combines leaves (``optax.clip_by_global_norm``) sees the whole gradient.
    For any transformation whose rows of output depend only on the same rows of input, and that
    maps a zero row to a zero row (clipping, scaling, a global norm, decayed weights of touched
    rows), this is the transformation applied to the dense gradient, restricted to the touched
    rows. `inner` may keep scalar state only (a step count): per-coordinate state
    (``optax.trace``, ``optax.scale_by_adam``) would be indexed by slot, not by row, and is
    refused with ``TypeError`` at ``init`` (use ``prepare_rows(lazy=False)`` before it, or the
    transformations of this library, which take row-sparse leaves).

    Args:
      inner: an optax transformation.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose state is `inner`'s.

    Example:
      >>> import optax
      >>> tx = on_values(optax.clip(0.5))
      >>> g = {"emb": RowSparse(jnp.array([3, 1]), jnp.array([[2.0], [-0.1]]), 5)}
      >>> clipped, _ = tx.update(g, tx.init({"emb": jnp.zeros((5, 1))}))
      >>> clipped["emb"].todense().ravel()
      Array([ 0. , -0.1,  0. ,  0.5,  0. ], dtype=float32)
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        state = inner.init(params)
        wide = [jnp.shape(x) for x in jax.tree.leaves(state) if jnp.ndim(x) > 0]
        if wide:
            raise TypeError(
                f"sparse.on_values: the wrapped transformation keeps per-coordinate state (an "
                f"array of shape {wide[0]}), which row-sparse values cannot index; put "
                "atx.sparse.prepare_rows(lazy=False) before it (dense leaves), or use a "
                "transformation of this library (every one takes row-sparse leaves)"
            )
        return state

    def update_fn(updates, state, params=None, **extra_args):
        check_rows("sparse.on_values", updates)
        leaves, treedef = jax.tree.flatten(updates, is_leaf=is_row_sparse)
        leaves = [x.coalesce() if is_row_sparse(x) else x for x in leaves]
        values = treedef.unflatten([x.values if is_row_sparse(x) else x for x in leaves])
        if params is not None:
            rows_of = lambda x, p: p.at[x.indices].get(mode="fill", fill_value=0)
            params = treedef.unflatten(
                [
                    rows_of(x, p) if is_row_sparse(x) else p
                    for x, p in zip(leaves, treedef.flatten_up_to(params))
                ]
            )
        new_values, state = inner.update(values, state, params, **extra_args)
        new_leaves = [
            x.with_values(jnp.where(per_row(x.in_range(), v), v, 0)) if is_row_sparse(x) else v
            for x, v in zip(leaves, treedef.flatten_up_to(new_values))
        ]
        return treedef.unflatten(new_leaves), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class MultiStepsState(NamedTuple):
    """State of `multi_steps`.

    Attributes:
      mini_step: int32, the micro-step within the current window (0 to k-1).
      gradient_step: int32, how many updates `inner` has made.
      inner_opt_state: the state of the inner transformation.
      acc_grads: params-shaped: the running mean of the dense gradients of the window (as
        ``optax.MultiSteps`` keeps it), or for a row-sparse leaf the sum of its rows.
      touched: params-shaped bool per row (shape ``(V,)``; scalar leaves ``()``): the rows of
        the window's row-sparse gradients.

    Example:
      >>> import adaptive_tx as atx
      >>> tx = multi_steps(atx.adagrad(0.1), every_k=4)
      >>> state = tx.init(jnp.zeros((3, 2)))
      >>> _, state = tx.update(RowSparse(jnp.array([2]), jnp.ones((1, 2)), 3), state)
      >>> state.mini_step, state.touched
      (Array(1, dtype=int32), Array([False, False,  True], dtype=bool))
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: optax.OptState
    acc_grads: optax.Updates
    touched: chex.ArrayTree


def _rows_of(x: Any) -> tuple[int, ...]:
    return jnp.shape(x)[:1]


def multi_steps(inner: optax.GradientTransformation, every_k: int):
    r"""``optax.MultiSteps`` for gradient trees with row-sparse leaves: accumulate, then step.

    .. math::

       \bar g = \frac{1}{k} \sum_{j=1}^{k} g_j, \qquad
       u = \mathrm{inner}(\bar g) \text{ at every } k\text{-th micro-step, } 0 \text{ otherwise.}

    Dense leaves accumulate as ``optax.MultiSteps`` does (a running mean). A `RowSparse` leaf adds
    its rows to a sum (K rows read and written per micro-step) and marks them; at the k-th
    micro-step `inner` gets the mean as a coalesced `RowSparse` of the rows touched in the window
    (every other slot empty), so `inner`'s lazy semantics are those of one step on the
    accumulated gradient: equal to accumulating the dense gradients, and for a rule with lazy
    semantics only the window's rows change. The emitted leaf has V slots: each micro-step costs
    :math:`V \times D` to emit and apply (as ``optax.MultiSteps``, which also runs `inner` at
    every micro-step). Between emissions the updates are zero.

    Args:
      inner: the transformation to run on the accumulated gradient.
      every_k: k, the number of micro-steps per update, an int >= 1.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose state is `MultiStepsState`.

    Example:
      >>> import optax, adaptive_tx as atx
      >>> tx = multi_steps(atx.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0), every_k=2)
      >>> params = jnp.zeros((4, 1))
      >>> state = tx.init(params)
      >>> u, state = tx.update(RowSparse(jnp.array([1]), jnp.ones((1, 1)), 4), state, params)
      >>> u.todense().ravel()
      Array([0., 0., 0., 0.], dtype=float32)
      >>> u, state = tx.update(RowSparse(jnp.array([2]), jnp.ones((1, 1)), 4), state, params)
      >>> u.todense().ravel()
      Array([ 0., -1., -1.,  0.], dtype=float32)
    """
    if isinstance(every_k, bool) or not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"multi_steps: every_k must be an int >= 1, got every_k={every_k!r}")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=jnp.zeros([], jnp.int32),
            inner_opt_state=inner.init(params),
            acc_grads=optax.tree.zeros_like(params),
            touched=jax.tree.map(lambda p: jnp.zeros(_rows_of(p), bool), params),
        )

    def accumulate(g, acc, touched, n):
        if not is_row_sparse(g):
            return acc + (g - acc) / (n + 1).astype(acc.dtype), touched
        g = g.coalesce()
        acc = acc.at[g.indices].add(g.values.astype(acc.dtype), mode="drop", unique_indices=True)
        return acc, touched.at[g.indices].set(True, mode="drop", unique_indices=True)

    def emitted(g, acc, touched):
        if not is_row_sparse(g):
            return acc.astype(g.dtype)
        num_rows = g.num_rows
        indices = jnp.where(touched, jnp.arange(num_rows, dtype=jnp.int32), num_rows)
        values = jnp.where(per_row(touched, acc), acc / every_k, 0).astype(g.dtype)
        return RowSparse._trusted(indices, values, num_rows, True)

    def zeros(u):
        if not is_row_sparse(u):
            return jnp.zeros(u.shape, u.dtype)
        empty = jnp.full(u.indices.shape, u.num_rows, jnp.int32)
        values = jnp.zeros(u.values.shape, u.values.dtype)
        return RowSparse._trusted(empty, values, u.num_rows, True)

    def update_fn(updates, state, params=None, **extra_args):
        check_rows("sparse.multi_steps", updates)
        leaves, treedef = jax.tree.flatten(updates, is_leaf=is_row_sparse)
        acc, touched = zip(
            *(
                accumulate(g, a, t, state.mini_step)
                for g, a, t in zip(
                    leaves,
                    treedef.flatten_up_to(state.acc_grads),
                    treedef.flatten_up_to(state.touched),
                )
            )
        )
        grads = treedef.unflatten([emitted(g, a, t) for g, a, t in zip(leaves, acc, touched)])
        emit = state.mini_step == every_k - 1

        def step(inner_state):
            new_updates, new_inner = inner.update(grads, inner_state, params, **extra_args)
            return new_updates, new_inner

        def skip(inner_state):
            shapes = jax.eval_shape(step, inner_state)[0]
            return jax.tree.map(zeros, shapes, is_leaf=is_row_sparse), inner_state

        new_updates, inner_state = jax.lax.cond(emit, step, skip, state.inner_opt_state)
        keep = lambda x: jnp.where(emit, jnp.zeros_like(x), x)
        return new_updates, MultiStepsState(
            mini_step=jnp.where(emit, 0, state.mini_step + 1).astype(jnp.int32),
            gradient_step=state.gradient_step + emit.astype(jnp.int32),
            inner_opt_state=inner_state,
            acc_grads=treedef.unflatten([keep(a) for a in acc]),
            touched=treedef.unflatten([keep(t) for t in touched]),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
