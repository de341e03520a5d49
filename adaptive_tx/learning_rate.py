r"""Scaling by a (scheduled) learning rate that keeps the rate it applied in its state."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate, sparse


class ScaleByLearningRateState(NamedTuple):
    """State of `scale_by_learning_rate`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating); the schedule's argument.
      learning_rate: float32 scalar, the rate applied at the last step (before any step: the first
        rate), so that diagnostics can read the effective learning rate from the state alone.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = scale_by_learning_rate(optax.linear_schedule(0.1, 0.0, 10))
      >>> state = tx.init(jnp.zeros(1))
      >>> for _ in range(2):
      ...     _, state = tx.update(jnp.ones(1), state)
      >>> state.count, state.learning_rate  # the second step used the rate at count 1
      (Array(2, dtype=int32), Array(0.09, dtype=float32))
    """

    count: jax.Array
    learning_rate: jax.Array


def scale_by_learning_rate(
    learning_rate: optax.ScalarOrSchedule,
    *,
    flip_sign: bool = True,
) -> optax.GradientTransformation:
    r"""Scale updates by the (negative) learning rate, a constant or a schedule of the step count.

    .. math::

       u_t \leftarrow -\eta_t\, u_t \quad (\eta_t = \mathtt{learning\_rate}(t-1) \text{ for a schedule}).

    The same arithmetic as ``optax.scale_by_learning_rate`` (the schedule sees 0, 1, 2, ...), and the
    rate used is kept in the state (`ScaleByLearningRateState.learning_rate`). Row-sparse leaves
    (`adaptive_tx.sparse.RowSparse`) have their rows scaled.

    Args:
      learning_rate: a non-negative number, or a schedule ``count -> rate``.
      flip_sign: multiply by :math:`-\eta` (descent, the default) rather than :math:`\eta`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByLearningRateState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = scale_by_learning_rate(optax.linear_schedule(1.0, 0.0, transition_steps=4))
      >>> state = tx.init(jnp.zeros(1))
      >>> _, state = tx.update(jnp.ones(1), state)
      >>> updates, state = tx.update(jnp.ones(1), state)
      >>> updates, state.learning_rate
      (Array([-0.75], dtype=float32), Array(0.75, dtype=float32))
    """
    learning_rate = _validate.check_learning_rate(learning_rate)
    sign = -1 if flip_sign else 1

    def rate(count):
        value = learning_rate(count) if callable(learning_rate) else learning_rate
        return jnp.asarray(value, jnp.float32)

    def init_fn(params):
        del params
        count = jnp.zeros([], jnp.int32)
        return ScaleByLearningRateState(count=count, learning_rate=rate(count))

    def update_fn(updates, state, params=None):
        del params
        current = rate(state.count)
        # The factor once per dtype, not once per leaf (a model has many leaves, few dtypes).
        factors = {}

        def scale(g):
            if g.dtype not in factors:
                factors[g.dtype] = jnp.array(sign * current, dtype=g.dtype)
            return factors[g.dtype] * g

        updates = sparse.map_values(scale, updates)
        return updates, ScaleByLearningRateState(optax.safe_increment(state.count), current)

    return optax.GradientTransformation(init_fn, update_fn)
