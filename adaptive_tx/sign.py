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
from adaptive_tx.rule import Rule, dense_transformation, ema, real_only, state_scale
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


class RpropHyperparams(NamedTuple):
    """The numbers the Rprop rule is built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      learning_rate: the initial step size :math:`\\eta_0`.
      eta_minus, eta_plus: the factors of a step size whose gradient flipped / kept its sign.
      min_step_size, max_step_size: the bounds of the step sizes.
      clamp_unchanged: 1.0 to clamp a step size to the bounds also where it did not change
        (torch: an initial ``lr`` outside them is clamped at the first step), 0.0 not to (optax).
    """

    learning_rate: float | jax.Array
    eta_minus: float | jax.Array
    eta_plus: float | jax.Array
    min_step_size: float | jax.Array
    max_step_size: float | jax.Array
    clamp_unchanged: float | jax.Array = False


class ScaleByRpropState(NamedTuple):
    """State of `scale_by_rprop`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      step_sizes: params-shaped tree, the step sizes :math:`\\eta_t` (optax's name).
      prev_updates: params-shaped tree, the last step :math:`\\eta_t \\operatorname{sign}(g_t)`
        (0 where the gradient's sign flipped; optax's name).
      packed_hyperparams: the `RpropHyperparams` values in one float array.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_rprop(0.1)
      >>> state = tx.init(jnp.zeros(2))
      >>> for g in ([1.0, 1.0], [1.0, -1.0]):
      ...     _, state = tx.update(jnp.array(g), state)
      >>> state.step_sizes, state.prev_updates  # 0.1 * 1.2 where the sign held, 0.1 * 0.5 not
      (Array([0.12, 0.05], dtype=float32), Array([0.12, 0.  ], dtype=float32))
    """

    count: jax.Array
    step_sizes: optax.Updates
    prev_updates: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        """The rule's scale: the step sizes :math:`\\eta_t` of the last step."""
        return state_scale(rprop_rule(RpropHyperparams(*self.packed_hyperparams)), self)


def rprop_rule(hyperparams: RpropHyperparams) -> Rule:
    r"""The Rprop rule for one coordinate (see `scale_by_rprop`).

    Example:
      >>> rule = rprop_rule(RpropHyperparams(0.1, 0.5, 1.2, 1e-6, 50.0))
      >>> before = (jnp.array([0.1, 0.1]), jnp.array([0.1, 0.1]))  # step sizes, last steps
      >>> step_sizes, steps = rule.accumulate(jnp.array([2.0, -2.0]), before, 2)
      >>> step_sizes, rule.direction(None, (step_sizes, steps), 2) * step_sizes
      (Array([0.12, 0.05], dtype=float32), Array([0.12, 0.  ], dtype=float32))
    """
    h = hyperparams

    def accumulate(g, stats, t):
        step, previous = stats
        product = g * previous
        changed = step * jnp.where(product > 0, h.eta_plus, h.eta_minus)
        clamped = jnp.clip(changed, h.min_step_size, h.max_step_size)
        bounded = jnp.clip(step, h.min_step_size, h.max_step_size)
        unchanged = jnp.where(h.clamp_unchanged, bounded, step)
        step = jnp.where(product == 0, unchanged, clamped)
        return step, jnp.where(product < 0, 0.0, step * jnp.sign(g))

    return Rule(
        initial=(h.learning_rate, 0.0),
        accumulate=accumulate,
        # sign(eta_t sign(g_t)) or 0 where the sign flipped: the step is exactly direction * scale
        direction=lambda g, stats, t: jnp.sign(stats[1]),
        scale=lambda stats, t: stats[0],
    )


def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
    *,
    clamp_unchanged: bool = False,
) -> optax.GradientTransformation:
    r"""Scale to a per-coordinate step size in the direction of the gradient's sign (Rprop).

    .. math::

       \eta_t = \begin{cases}
         \min(\eta_{t-1} \eta_+, \eta_{max}) & g_t u_{t-1} > 0 \\
         \max(\eta_{t-1} \eta_-, \eta_{min}) & g_t u_{t-1} < 0 \\
         \eta_{t-1} & g_t u_{t-1} = 0 \end{cases}, \qquad
       u_t = \begin{cases} 0 & g_t u_{t-1} < 0 \\ \eta_t \operatorname{sign}(g_t) & \text{else}
       \end{cases},

    :math:`\eta_0` = ``learning_rate``, :math:`u_0 = 0`: the step grows while the gradient keeps
    its sign and shrinks (and is skipped once) when it flips, whatever the gradient's size
    (Rprop⁻ without weight backtracking, as optax and torch). The update is :math:`u_t`; the
    descent direction is its negative (the aliases flip the sign). The rule's direction is
    :math:`\operatorname{sign}(u_t)` (the sign of :math:`g_t`, 0 where it flipped) and its scale
    the step sizes :math:`\eta_t`: those are Rprop's effective learning rates. Meant for full
    batches: with noisy gradients the signs flip at random and the steps shrink to
    ``min_step_size``.

    Reference: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
    The RPROP Algorithm", ICNN 1993, https://doi.org/10.1109/ICNN.1993.298623

    Args:
      learning_rate: the initial step size :math:`\eta_0` >= 0 (a number: it is the state's start).
      eta_minus: the factor :math:`\eta_-` > 0 of a step whose gradient flipped (< 1 to shrink).
      eta_plus: the factor :math:`\eta_+` > 0 of a step whose gradient kept its sign (> 1 to grow).
      min_step_size, max_step_size: the bounds :math:`0 \le \eta_{min} \le \eta_{max}`.
      clamp_unchanged: also clamp an unchanged step size to the bounds (torch).

    Real numbers only: complex parameters and gradients raise a TypeError.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByRpropState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_rprop(0.1)
      >>> updates, state = tx.update(jnp.array([3.0, -0.01, 0.0]), tx.init(jnp.zeros(3)))
      >>> updates
      Array([ 0.1, -0.1,  0. ], dtype=float32)
    """
    learning_rate = _validate.check_non_negative("learning_rate", learning_rate)
    eta_minus = _validate.check_positive("eta_minus", eta_minus)
    eta_plus = _validate.check_positive("eta_plus", eta_plus)
    min_step_size = _validate.check_non_negative("min_step_size", min_step_size)
    max_step_size = _validate.check_non_negative("max_step_size", max_step_size)
    bounds = [_validate._concrete(v) for v in (min_step_size, max_step_size)]
    if None not in bounds and bounds[0] > bounds[1]:
        raise ValueError(
            f"min_step_size must be <= max_step_size, got min_step_size={min_step_size!r} and "
            f"max_step_size={max_step_size!r}"
        )
    hyperparams = RpropHyperparams(
        learning_rate, eta_minus, eta_plus, min_step_size, max_step_size, clamp_unchanged
    )
    rule = rprop_rule(hyperparams)
    tx = dense_transformation(rule, ScaleByRpropState, (None, None), hyperparams)
    return real_only(tx, "scale_by_rprop", _RPROP_COMPLEX_HINT)


_RPROP_COMPLEX_HINT = (
    "Rprop compares signs, which complex numbers do not have; pass the real and imaginary parts "
    "as separate real parameters (optax.contrib.split_real_and_imaginary)"
)
