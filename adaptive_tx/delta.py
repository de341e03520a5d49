r"""Adadelta: steps whose units come from a running average of the past steps.

Zeiler's Adadelta keeps two exponential moving averages per coordinate, of the squared gradients
:math:`E[g^2]_t` and of the squared steps :math:`E[\Delta x^2]_t`, and takes the step
:math:`\Delta x_t = -\sqrt{E[\Delta x^2]_{t-1} + \epsilon}\,/\,\sqrt{E[g^2]_t + \epsilon}\; g_t`:
the ratio has the units of the parameter, so no global learning rate is needed (optax and torch
still multiply by one; 1.0 is Zeiler's method).

As a `adaptive_tx.rule.Rule`, the direction is the gradient in the units of the past steps,
:math:`d_t = \sqrt{E[\Delta x^2]_{t-1} + \epsilon}\; g_t` (it reads the statistics before the
step, ``reads_previous``), and the scale is :math:`1/\sqrt{E[g^2]_t + \epsilon}`, a function of the
state after the step: the effective learning rate is :math:`\eta/\sqrt{E[g^2]_t + \epsilon}`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, abs_sq, dense_transformation, ema, real_only, state_scale
from adaptive_tx.state_precision import StorageSpec, moment_storages


class AdadeltaHyperparams(NamedTuple):
    """The numbers the Adadelta rule is built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      rho: :math:`\\rho`, the decay of both averages.
      eps: ε, added inside both square roots.
    """

    rho: float | jax.Array
    eps: float | jax.Array


class ScaleByAdadeltaState(NamedTuple):
    """State of `scale_by_adadelta`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      e_g: params-shaped tree, :math:`E[g^2]_t` (optax's name).
      e_x: params-shaped tree, :math:`E[\\Delta x^2]_t`, the average of the squared steps before
        the learning rate (optax's name).
      packed_hyperparams: the `AdadeltaHyperparams` values in one float array.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adadelta(rho=0.5, eps=1.0)
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.e_g, state.per_coordinate_scale()  # 0.5 * 2², 1 / sqrt(2 + 1)
      (Array([2.], dtype=float32), Array([0.57735026], dtype=float32))
    """

    count: jax.Array
    e_g: optax.Updates
    e_x: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`1/\sqrt{E[g^2]_t + \epsilon}` at the last step."""
        return state_scale(adadelta_rule(AdadeltaHyperparams(*self.packed_hyperparams)), self)


def adadelta_rule(hyperparams: AdadeltaHyperparams) -> Rule:
    r"""The Adadelta rule for one coordinate (see `scale_by_adadelta`).

    Example:
      >>> rule = adadelta_rule(AdadeltaHyperparams(0.5, 1.0))
      >>> g, before = jnp.array([2.0]), (jnp.zeros(1), jnp.array([3.0]))
      >>> after = rule.accumulate(g, before, jnp.int32(1))
      >>> rule.direction(g, after, 1, before) * rule.scale(after, 1)  # sqrt(3 + 1) / sqrt(2 + 1) * 2
      Array([2.309401], dtype=float32)
    """
    rho, eps = hyperparams

    def direction(g, stats, t, previous):
        return jnp.sqrt(previous[1] + eps) * g

    def scale(stats, t):
        return 1 / jnp.sqrt(stats[0] + eps)

    def accumulate(g, stats, t):
        e_g = ema(stats[0], abs_sq(g), rho)
        step = direction(g, (e_g, stats[1]), t, stats) * scale((e_g, stats[1]), t)
        return e_g, ema(stats[1], abs_sq(step), rho)

    return Rule(
        initial=(0.0, 0.0),
        accumulate=accumulate,
        direction=direction,
        scale=scale,
        reads_previous=True,
    )


def scale_by_adadelta(
    rho: float = 0.9,
    eps: float = 1e-6,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by the ratio of the RMS of past steps to the RMS of gradients (Adadelta).

    .. math::

       E[g^2]_t = \rho\,E[g^2]_{t-1} + (1-\rho)\,g_t^2, \qquad
       u_t = \frac{\sqrt{E[\Delta x^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}}\, g_t, \qquad
       E[\Delta x^2]_t = \rho\,E[\Delta x^2]_{t-1} + (1-\rho)\,u_t^2,

    with :math:`E[g^2]_0 = E[\Delta x^2]_0 = 0`. Real numbers only: complex parameters and
    gradients raise a TypeError (optax's twin squares a complex gradient into a complex statistic).
    The numerator carries the units of the parameter
    (ε alone at first, so the first steps are about :math:`\sqrt{\epsilon / (1-\rho)}` per
    coordinate), and the step adapts to the curvature without a hand-tuned global rate. The
    direction the effective learning rate multiplies is
    :math:`\sqrt{E[\Delta x^2]_{t-1} + \epsilon}\, g_t`, its scale
    :math:`1/\sqrt{E[g^2]_t + \epsilon}`.

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012,
    https://arxiv.org/abs/1212.5701

    Args:
      rho: :math:`\rho`, in [0, 1), the decay of both averages.
      eps: ε > 0, added inside both square roots; it starts the steps (with ε = 0 the average of
        the steps stays 0 and no coordinate ever moves).
      nu_dtype: storage of both averages: None (the parameters' dtype), a float dtype,
        ``"bfloat16_sr"``, ``"int8_blockwise"`` or a storage object
        (`adaptive_tx.state_precision`). Not the estimating storages (`adaptive_tx.Factored`,
        `adaptive_tx.BlockMean`: ValueError): the average of the steps must see the step each
        coordinate took. With float16 parameters prefer ``jnp.float32``: :math:`E[\Delta x^2]`
        starts near :math:`(1-\rho)\epsilon` (1e-7), subnormal in float16.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByAdadeltaState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adadelta(rho=0.5, eps=1.0)
      >>> updates, state = tx.update(jnp.array([2.0, 0.0]), tx.init(jnp.zeros(2)))
      >>> updates  # sqrt(0 + 1) / sqrt(0.5 * 2² + 1) * 2
      Array([1.1547005, 0.       ], dtype=float32)
    """
    rho = _validate.check_unit_interval("rho", rho)
    eps = _validate.check_positive("eps", eps)
    hyperparams = AdadeltaHyperparams(rho, eps)
    _, nu = moment_storages(None, nu_dtype)
    if nu.reads_stored:
        raise ValueError(
            f"scale_by_adadelta: nu_dtype={nu_dtype!r} estimates the averages per block or "
            "factor, but the average of the steps must see the step the update took per "
            "coordinate; use a per-coordinate storage (None, a float dtype, 'bfloat16_sr', "
            "'int8_blockwise')"
        )
    rule = adadelta_rule(hyperparams)
    tx = dense_transformation(rule, ScaleByAdadeltaState, (nu, nu), hyperparams)
    return real_only(tx, "scale_by_adadelta", _COMPLEX_HINT)


_COMPLEX_HINT = (
    "Adadelta is defined here for real numbers (optax squares a complex gradient, g ** 2, into a "
    "complex statistic); pass the real and imaginary parts as separate real parameters "
    "(optax.contrib.split_real_and_imaginary)"
)
