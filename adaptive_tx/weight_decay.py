r"""Decoupled weight decay (AdamW's), added to the updates before the learning rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate, sparse

Mask = Union[optax.Params, Callable[[optax.Params], optax.Params], None]
"""The type of a weight-decay ``mask`` (as ``optax.masked`` reads it).

A tree of booleans (or a prefix of the parameters' tree), a function of the parameters returning
one, or None (every leaf is decayed). The leaves where the mask is True are decayed."""


class AddDecoupledWeightDecayState(NamedTuple):
    """State of `add_decoupled_weight_decay` when the decay or the learning rate is a schedule.

    Constants need no state (``optax.EmptyState()``, as optax's ``add_decayed_weights``), so
    ``optax.tree.get(state, "count")`` finds the counts optax's state has, no more.

    Attributes:
      schedule_count: int32 scalar, the number of steps taken (saturating); a schedule's argument
        (named apart from the adaptive method's ``count``, which ``optax.tree.get`` finds).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> add_decoupled_weight_decay(optax.constant_schedule(0.1)).init({'w': jnp.zeros(2)})
      AddDecoupledWeightDecayState(schedule_count=Array(0, dtype=int32))
      >>> add_decoupled_weight_decay(0.1).init({'w': jnp.zeros(2)})
      EmptyState()
    """

    schedule_count: jax.Array


def add_decoupled_weight_decay(
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Mask = None,
    *,
    learning_rate: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformation:
    r"""Add :math:`\lambda_t\,\theta` to the updates (decoupled weight decay).

    .. math::

       u_t \leftarrow u_t + \lambda_t\, \theta_{t-1}
       \quad\text{or, with a learning rate,}\quad u_t \leftarrow u_t - \eta_t \lambda_t\, \theta_{t-1}.

    Placed after an adaptive scaling and before the learning rate, the decay is *decoupled* from the
    adaptive preconditioner: every weight shrinks by :math:`\eta_t \lambda_t` per step whatever its
    gradient history (AdamW), unlike an L2 term added to the gradient, which the preconditioner would
    rescale. Same arithmetic as ``optax.add_decayed_weights``; torch's AdamW multiplies the
    parameters by :math:`1 - \eta\lambda` instead, which is the same update. A row-sparse update
    (`adaptive_tx.sparse.RowSparse`) decays only its rows (lazy semantics, see `adaptive_tx.sparse`).

    Given ``learning_rate``, the transformation applies the decay itself, scaled by
    :math:`-\eta_t`, and goes *after* the learning rate (and after any momentum): the parameters
    shrink by :math:`\eta_t\lambda_t` outside the momentum buffer, as keras applies its
    ``weight_decay`` (:math:`\theta \leftarrow \theta - \theta\lambda\eta` before the step).

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
    https://arxiv.org/abs/1711.05101

    Args:
      weight_decay: :math:`\lambda`, a non-negative number or a schedule ``count -> rate``.
      mask: as in optax: a pytree of bools shaped like (a prefix of) the params, or a callable
        returning one from the params; the decay applies where True. None applies it everywhere.
        A callable sees a row-sparse gradient leaf as its table's ``jax.ShapeDtypeStruct``
        (`adaptive_tx.sparse.shape_view`), so a mask of paths, shapes or dtypes works on both.
      learning_rate: None (the decay goes before the learning rate), or :math:`\eta`, a
        non-negative number or a schedule ``count -> rate`` (the decay goes after it).

    Returns:
      An `optax.GradientTransformation` whose state is `AddDecoupledWeightDecayState` with a
      schedule, ``optax.EmptyState()`` with constants (either inside
      ``optax.MaskedState`` when a mask is given). Its ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = add_decoupled_weight_decay(0.1)
      >>> params = {'w': jnp.array([2.0]), 'b': jnp.array([2.0])}
      >>> updates, _ = tx.update({'w': jnp.zeros(1), 'b': jnp.zeros(1)}, tx.init(params), params)
      >>> updates['w']
      Array([0.2], dtype=float32)
      >>> keras_style = add_decoupled_weight_decay(0.1, learning_rate=0.5)
      >>> zeros = {'w': jnp.zeros(1), 'b': jnp.zeros(1)}
      >>> updates, _ = keras_style.update(zeros, keras_style.init(params), params)
      >>> updates['w']  # -0.5 * 0.1 * 2
      Array([-0.1], dtype=float32)
    """
    weight_decay = _validate.check_non_negative("weight_decay", weight_decay)
    if learning_rate is not None:
        learning_rate = _validate.check_learning_rate(learning_rate)

    def value(hyperparameter, count):
        return hyperparameter(count) if callable(hyperparameter) else hyperparameter

    scheduled = callable(weight_decay) or callable(learning_rate)

    def init_fn(params):
        del params
        if not scheduled:
            return optax.EmptyState()
        return AddDecoupledWeightDecayState(schedule_count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "add_decoupled_weight_decay needs the params: call update(updates, state, params)"
            )
        sparse.check_rows("AddDecoupledWeightDecay", updates)
        _validate.check_tree_matches("AddDecoupledWeightDecay", sparse.shape_view(updates), params)
        scheduled_state = isinstance(state, AddDecoupledWeightDecayState)
        count = state.schedule_count if scheduled_state else None
        new_state = optax.EmptyState()
        if scheduled_state:
            new_state = AddDecoupledWeightDecayState(optax.safe_increment(count))
        if isinstance(weight_decay, (int, float)) and weight_decay == 0:
            return updates, new_state
        rate = value(weight_decay, count)
        if learning_rate is not None:
            rate = -value(learning_rate, count) * rate
        updates = sparse.map_with_params(
            lambda g, p: (g + rate * p).astype(g.dtype), updates, params
        )
        return updates, new_state

    tx = optax.GradientTransformation(init_fn, update_fn)
    if callable(mask):
        # A mask function sees each row-sparse leaf as its dense shape (jax.ShapeDtypeStruct), so
        # functions of the params' paths, shapes and dtypes give the same mask for the gradients.
        return optax.masked(tx, lambda tree: mask(sparse.shape_view(tree)))
    return tx if mask is None else optax.masked(tx, mask)
