r"""Sign-based methods: each coordinate moves by a step of its own size in the direction of a sign.

Lion takes the sign of an interpolation between the gradient and a momentum; Rprop the sign of
the gradient, with a per-coordinate step size that grows while the sign holds and shrinks when it
flips. Neither divides by a gradient statistic: the size of the step is set by the learning rate
(Lion) or by the step sizes in the state (Rprop), which are their effective learning rates.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, dense_transformation, ema, state_scale
from adaptive_tx.state_precision import StorageSpec, moment_storages


class LionHyperparams(NamedTuple):
    """The numbers the Lion rule is built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      b1: :math:`\\beta_1`, the interpolation that is signed.
      b2: :math:`\\beta_2`, the decay of the momentum.
    """

    b1: float | jax.Array
    b2: float | jax.Array


class ScaleByLionState(NamedTuple):
    """State of `scale_by_lion`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the momentum :math:`m_t` (``mu_dtype``).
      packed_hyperparams: the `LionHyperparams` values in one float array.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_lion()
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.mu, state.per_coordinate_scale()  # 0.01 * 2; every step has size 1
      (Array([0.02], dtype=float32), Array([1.], dtype=float32))
    """

    count: jax.Array
    mu: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        """The rule's scale, 1 for every coordinate (the step's size is the learning rate)."""
        return state_scale(lion_rule(LionHyperparams(*self.packed_hyperparams)), self)


def _ones_like(x: jax.Array) -> jax.Array:
    """Ones of `x`'s shape, real (a complex momentum has a real scale)."""
    return jnp.ones(jnp.shape(x), jnp.real(x).dtype)


def lion_rule(hyperparams: LionHyperparams) -> Rule:
    r"""The Lion rule for one coordinate (see `scale_by_lion`).

    Example:
      >>> rule = lion_rule(LionHyperparams(0.9, 0.99))
      >>> g, before = jnp.array([1.0, 1.0]), (jnp.array([-0.5, 0.5]),)
      >>> after = rule.accumulate(g, before, jnp.int32(2))
      >>> rule.direction(g, after, 2, before)  # sign(0.1 g + 0.9 m_{t-1})
      Array([-1.,  1.], dtype=float32)
    """
    b1, b2 = hyperparams
    return Rule(
        initial=(0.0,),
        accumulate=lambda g, stats, t: (ema(stats[0], g, b2),),
        direction=lambda g, stats, t, previous: jnp.sign(ema(previous[0], g, b1)),
        scale=lambda stats, t: _ones_like(stats[0]),
        reads_previous=True,
    )


def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale to the sign of an interpolation of the gradient and a momentum (Lion).

    .. math::

       u_t = \operatorname{sign}\big(\beta_1 m_{t-1} + (1-\beta_1)\, g_t\big), \qquad
       m_t = \beta_2 m_{t-1} + (1-\beta_2)\, g_t, \quad m_0 = 0.

    Every coordinate moves by the learning rate (0 where the interpolation is exactly 0): the
    update has the same RMS whatever the gradient's scale, so Lion wants a learning rate 3 to 10
    times smaller than AdamW's and a weight decay as many times larger. It keeps one moment where
    Adam keeps two. The direction reads the momentum before the step (``Rule.reads_previous``);
    the scale is 1, so the effective learning rate is the learning rate.

    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023,
    https://arxiv.org/abs/2302.06675

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      mu_dtype: storage of :math:`m_t`: None (the parameters' dtype), a float dtype,
        ``"bfloat16_sr"``, ``"int8_blockwise"`` or a storage object
        (`adaptive_tx.state_precision`).

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByLionState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_lion()
      >>> updates, state = tx.update(jnp.array([0.5, -3.0, 0.0]), tx.init(jnp.zeros(3)))
      >>> updates
      Array([ 1., -1.,  0.], dtype=float32)
    """
    b1 = _validate.check_unit_interval("b1", b1)
    b2 = _validate.check_unit_interval("b2", b2)
    hyperparams = LionHyperparams(b1, b2)
    mu, _ = moment_storages(mu_dtype, None)
    return dense_transformation(lion_rule(hyperparams), ScaleByLionState, (mu,), hyperparams)
