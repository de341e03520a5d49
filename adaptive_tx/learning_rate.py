r"""Scaling by a (scheduled) learning rate that keeps the rate it applied in its state."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate, sparse


class ScaleByLearningRateState(NamedTuple):
    """State of `scale_by_learning_rate` with a constant rate.

    Attributes:
      rate: float32 scalar, the rate the steps apply, so that diagnostics can read the effective
        learning rate from the state alone.

    The state holds no step count (optax's constant rate keeps none either), so
    ``optax.tree.get(state, "count")`` finds the adaptive method's count alone, and the field is
    not named ``learning_rate``, the name ``optax.inject_hyperparams`` gives the injected rate.

    Example:
      >>> import jax.numpy as jnp
      >>> scale_by_learning_rate(0.1).init(jnp.zeros(1))
      ScaleByLearningRateState(rate=Array(0.1, dtype=float32))
    """

    rate: jax.Array


class ScaleByScheduledLearningRateState(NamedTuple):
    """State of `scale_by_learning_rate` with a schedule.

    Attributes:
      schedule_count: int32 scalar, the number of steps taken (saturating); the schedule's
        argument (optax's ``ScaleByScheduleState.count``: named apart so that
        ``optax.tree.get(state, "count")`` finds one count, the adaptive method's).
      rate: float32 scalar, the rate applied at the last step (before any step: the first rate),
        so that diagnostics can read the effective learning rate from the state alone.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = scale_by_learning_rate(optax.linear_schedule(0.1, 0.0, 10))
      >>> state = tx.init(jnp.zeros(1))
      >>> for _ in range(2):
      ...     _, state = tx.update(jnp.ones(1), state)
      >>> state.schedule_count, state.rate  # the second step used the rate at count 1
      (Array(2, dtype=int32), Array(0.09, dtype=float32))
    """

    schedule_count: jax.Array
    rate: jax.Array


# The states that keep the rate a step applied (what `adaptive_tx.diagnostics` reads).
LEARNING_RATE_STATES = (ScaleByLearningRateState, ScaleByScheduledLearningRateState)


def scale_by_learning_rate(
    learning_rate: optax.ScalarOrSchedule,
    *,
    flip_sign: bool = True,
) -> optax.GradientTransformation:
    r"""Scale updates by the (negative) learning rate, a constant or a schedule of the step count.

    .. math::

       u_t \leftarrow -\eta_t\, u_t \quad (\eta_t = \mathtt{learning\_rate}(t-1) \text{ for a schedule}).

    The same arithmetic as ``optax.scale_by_learning_rate`` (the schedule sees 0, 1, 2, ...), and the
    rate used is kept in the state's ``rate``. Row-sparse leaves
    (`adaptive_tx.sparse.RowSparse`) have their rows scaled.

    Args:
      learning_rate: a non-negative number, or a schedule ``count -> rate``.
      flip_sign: multiply by :math:`-\eta` (descent, the default) rather than :math:`\eta`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByLearningRateState` (a constant
      rate, no step count) or `ScaleByScheduledLearningRateState` (a schedule: the step count and
      the rate of the last step).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = scale_by_learning_rate(optax.linear_schedule(1.0, 0.0, transition_steps=4))
      >>> state = tx.init(jnp.zeros(1))
      >>> _, state = tx.update(jnp.ones(1), state)
      >>> updates, state = tx.update(jnp.ones(1), state)
      >>> updates, state.rate
      (Array([-0.75], dtype=float32), Array(0.75, dtype=float32))
    """
    learning_rate = _validate.check_learning_rate(learning_rate)
    sign = -1 if flip_sign else 1

    def rate(count):
        value = learning_rate(count) if callable(learning_rate) else learning_rate
        return jnp.asarray(value, jnp.float32)

    def init_fn(params):
        del params
        if not callable(learning_rate):
            return ScaleByLearningRateState(rate=rate(None))
        count = jnp.zeros([], jnp.int32)
        return ScaleByScheduledLearningRateState(schedule_count=count, rate=rate(count))

    def update_fn(updates, state, params=None):
        del params
        scheduled = isinstance(state, ScaleByScheduledLearningRateState)
        count = state.schedule_count if scheduled else None
        current = rate(count)
        # The factor once per dtype, not once per leaf (a model has many leaves, few dtypes).
        factors = {}

        def scale(g):
            if g.dtype not in factors:
                factors[g.dtype] = jnp.array(sign * current, dtype=g.dtype)
            return factors[g.dtype] * g

        updates = sparse.map_values(scale, updates)
        if count is None:
            return updates, ScaleByLearningRateState(current)
        return updates, ScaleByScheduledLearningRateState(optax.safe_increment(count), current)

    return optax.GradientTransformation(init_fn, update_fn)
