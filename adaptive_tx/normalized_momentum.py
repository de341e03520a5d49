r"""Normalize the gradient first, average it second (ADOPT, LaProp).

Adam divides a momentum of raw gradients by a root mean square; the methods here divide each
gradient by its root mean square *before* it enters the momentum, so that a single large gradient
cannot dominate the momentum and the momentum :math:`\beta_1` and the second-moment
:math:`\beta_2` no longer interact. The normalization lives in the rule's statistics, so the
rule's direction is the momentum itself and the effective learning rate carries no per-coordinate
factor: :math:`\eta` for ADOPT, :math:`\eta / (1-\beta_1^t)` for LaProp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, abs_sq, bias_correction, dense_transformation, ema, state_scale
from adaptive_tx.state_precision import StorageSpec, moment_storages


def quarter_power(count: jax.Array) -> jax.Array:
    r"""ADOPT's default clipping bound :math:`c(t-1) = (t-1)^{1/4}` of the count before the step.

    Example:
      >>> float(quarter_power(jnp.int32(16)))
      2.0
    """
    return count**0.25


class AdoptHyperparams(NamedTuple):
    """The numbers the ADOPT rule is built from (kept in the state, packed in one array).

    Attributes:
      b1, b2: :math:`\\beta_1, \\beta_2`.
      eps: the floor of the root :math:`\\max(\\sqrt{v_{t-1}}, \\epsilon)`.
      use_clipping: 1.0 to clip the normalized gradient to :math:`\\pm c(t-1)`, 0.0 not to.
    """

    b1: float | jax.Array
    b2: float | jax.Array
    eps: float | jax.Array
    use_clipping: float | jax.Array = True


class ScaleByAdoptState(NamedTuple):
    """State of `scale_by_adopt`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the momentum of normalized gradients :math:`m_t`.
      nu: params-shaped tree, the second moment :math:`v_t`.
      last_step: params-shaped tree, the last normalized (clipped) gradient (``nesterov`` only,
        whose look-ahead reads it; else None).
      packed_hyperparams: the `AdoptHyperparams` values in one float array.

    Example:
      >>> tx = scale_by_adopt()
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.mu, state.nu, state.per_coordinate_scale()  # the first step only measures v
      (Array([0.], dtype=float32), Array([4.], dtype=float32), Array([1.], dtype=float32))
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    last_step: optax.Updates | None = None
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        """The rule's scale, 1: ADOPT's update is its momentum :math:`m_t` (or the look-ahead)."""
        hyperparams = AdoptHyperparams(*self.packed_hyperparams)
        return state_scale(adopt_rule(hyperparams, self.last_step is not None), self)


def adopt_rule(
    hyperparams: AdoptHyperparams,
    nesterov: bool,
    clip_value_fn: Callable[[jax.Array], jax.Array] = quarter_power,
) -> Rule:
    r"""The ADOPT rule for one coordinate (see `scale_by_adopt`).

    Example:
      >>> rule = adopt_rule(AdoptHyperparams(0.9, 0.9999, 1e-6), False)
      >>> rule.accumulate(jnp.array([3.0]), (jnp.zeros(1), jnp.array([4.0])), jnp.int32(2))
      (Array([0.1], dtype=float32), Array([4.0005], dtype=float32))
    """
    b1, b2, eps, use_clipping = hyperparams

    def normalized(g, nu, t):
        if jnp.iscomplexobj(g) and use_clipping is not False:
            raise TypeError(
                f"scale_by_adopt: the gradient is {g.dtype}, and clipping a complex number "
                "(use_clipping=True) has no meaning, complex numbers having no order; pass "
                "use_clipping=False for complex parameters, or optimize their real and imaginary "
                "parts as real parameters"
            )
        step = g / jnp.maximum(jnp.sqrt(nu), eps)
        if use_clipping is False:  # a complex step cannot go through jnp.clip
            return step
        bound = clip_value_fn(t - 1)
        return jnp.where(use_clipping, jnp.clip(step, -bound, bound), step)

    def decays(t):
        first = t == 1  # optax: the first step only measures v (β2 = 0) and keeps m (β1 = 1)
        return jnp.where(first, 1.0, b1), jnp.where(first, 0.0, b2)

    def accumulate(g, stats, t):
        b1_t, b2_t = decays(t)
        step = normalized(g, stats[1], t)
        mu, nu = ema(stats[0], step, b1_t), ema(stats[1], abs_sq(g), b2_t)
        return (mu, nu, step) if nesterov else (mu, nu)

    def direction(g, stats, t):
        if not nesterov:
            return stats[0]
        return ema(stats[0], stats[2], decays(t)[0])

    return Rule(
        initial=(0.0, 0.0, 0.0) if nesterov else (0.0, 0.0),
        accumulate=accumulate,
        direction=direction,
        scale=lambda stats, t: jnp.ones_like(stats[0]),
    )


def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: StorageSpec = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = quarter_power,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by a momentum of gradients normalized by the *previous* second moment (ADOPT).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1)\,
             \mathrm{clip}\!\Big(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)}, \pm c(t-1)\Big), \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad u_t = m_t,

    for :math:`t \ge 2`; the first step sets :math:`v_1 = g_1^2` and keeps :math:`m_1 = 0` (so the
    first update is 0). Normalizing by :math:`v_{t-1}`, which does not contain :math:`g_t`, removes
    the correlation that makes Adam diverge for some :math:`\beta_2`; the clip
    :math:`c(t-1) = (t-1)^{1/4}` (``clip_value_fn``) bounds the early steps. ``nesterov`` returns
    :math:`\beta_1 m_t + (1-\beta_1)\,\mathrm{clip}(\cdot)` and keeps the clipped gradient in the
    state for it.

    Reference: Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal
    Rate", NeurIPS 2024, https://arxiv.org/abs/2411.02853

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: the floor of :math:`\sqrt{v_{t-1}}`, > 0 (the first normalized step divides by it).
      mu_dtype: storage of :math:`m_t` (see `scale_by_bias_corrected_moments`).
      nesterov: use the look-ahead momentum.
      use_clipping: clip the normalized gradient to :math:`\pm c(t-1)`.
      clip_value_fn: :math:`c`, a function of the step count before the step (0 at the first).
      nu_dtype: storage of :math:`v_t`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByAdoptState`.

    Example:
      >>> tx = scale_by_adopt(b2=0.5)
      >>> state = tx.init(jnp.zeros(1))
      >>> _, state = tx.update(jnp.array([2.0]), state)
      >>> updates, state = tx.update(jnp.array([4.0]), state)
      >>> updates  # 0.1 * clip(4 / sqrt(4), ±1)
      Array([0.1], dtype=float32)
    """
    b1 = _validate.check_unit_interval("b1", b1)
    b2 = _validate.check_unit_interval("b2", b2)
    eps = _validate.check_positive("eps", eps)
    if not callable(clip_value_fn):
        raise TypeError(
            f"clip_value_fn={clip_value_fn!r} must be a function of the step count (the default "
            "is count ** 0.25); pass use_clipping=False not to clip, and under "
            "optax.inject_hyperparams declare it static_args=('clip_value_fn',) (else it is "
            "called as a schedule and its value passed on)"
        )
    hyperparams = AdoptHyperparams(b1, b2, eps, use_clipping)
    rule = adopt_rule(hyperparams, nesterov, clip_value_fn)
    mu, nu = moment_storages(mu_dtype, nu_dtype)
    storages = (mu, nu, mu) if nesterov else (mu, nu)
    return dense_transformation(rule, ScaleByAdoptState, storages, hyperparams)


class LaPropHyperparams(NamedTuple):
    """The numbers the LaProp rule is built from (kept in the state, packed in one array).

    Attributes:
      b1, b2: :math:`\\beta_1, \\beta_2`.
      eps: ε added to :math:`\\sqrt{\\hat v_t}`.
    """

    b1: float | jax.Array
    b2: float | jax.Array
    eps: float | jax.Array


class ScaleByLaPropState(NamedTuple):
    """State of `scale_by_laprop`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the momentum of normalized gradients :math:`m_t`.
      nu: params-shaped tree, the second moment :math:`v_t`.
      packed_hyperparams: the `LaPropHyperparams` values in one float array.

    Example:
      >>> tx = scale_by_laprop(eps=0.0)
      >>> _, state = tx.update(jnp.array([-2.0]), tx.init(jnp.zeros(1)))
      >>> state.mu, state.per_coordinate_scale()  # 0.1 sign(g), 1 / (1 - 0.9)
      (Array([-0.1], dtype=float32), Array([10.], dtype=float32))
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`1 / (1-\beta_1^t)` at the last step."""
        return state_scale(laprop_rule(LaPropHyperparams(*self.packed_hyperparams)), self)


def laprop_rule(hyperparams: LaPropHyperparams) -> Rule:
    r"""The LaProp rule for one coordinate (see `scale_by_laprop`).

    Example:
      >>> rule = laprop_rule(LaPropHyperparams(0.9, 0.999, 0.0))
      >>> rule.accumulate(jnp.array([3.0]), (jnp.zeros(1), jnp.zeros(1)), jnp.int32(1))[0]
      Array([0.1], dtype=float32)
    """
    b1, b2, eps = hyperparams

    def accumulate(g, stats, t):
        nu = ema(stats[1], abs_sq(g), b2)
        step = g / (jnp.sqrt(nu / bias_correction(b2, t)) + eps)
        return ema(stats[0], step, b1), nu

    return Rule(
        initial=(0.0, 0.0),
        accumulate=accumulate,
        direction=lambda g, stats, t: stats[0],
        scale=lambda stats, t: jnp.broadcast_to(1 / bias_correction(b1, t), stats[0].shape),
    )


def scale_by_laprop(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mu_dtype: StorageSpec = None,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by a bias-corrected momentum of RMS-normalized gradients (LaProp).

    .. math::

       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
       m_t = \beta_1 m_{t-1} + (1-\beta_1) \frac{g_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}, \qquad
       u_t = \frac{m_t}{1-\beta_1^t}.

    RMSProp's normalized step, averaged by a momentum afterwards (Adam averages first and
    normalizes afterwards): :math:`\beta_1` and :math:`\beta_2` no longer interact, so any
    :math:`\beta_1 < 1` is stable, and the step of every coordinate is bounded by
    :math:`\eta\,/\,(1-\beta_1^t) \cdot \max_\tau |g_\tau| / \sqrt{\hat v_\tau}`. The bias
    corrections are float32 scalars from β rounded to float32, as optax computes them
    (``optax.scale_by_rms(..., eps_in_sqrt=False, bias_correction=True)`` followed by
    ``optax.ema(b1)`` is the same method).

    Reference: Ziyin, Wang & Ueda, "LaProp: Separating Momentum and Adaptivity in Adam", 2020,
    https://arxiv.org/abs/2002.04839

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: ε added to :math:`\sqrt{\hat v_t}`, >= 0.
      mu_dtype, nu_dtype: storage of :math:`m_t` and :math:`v_t` (see
        `scale_by_bias_corrected_moments`).

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByLaPropState`.

    Example:
      >>> tx = scale_by_laprop()
      >>> updates, _ = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates  # the first step is the sign of the gradient
      Array([ 1., -1.], dtype=float32)
    """
    b1 = _validate.check_unit_interval("b1", b1)
    b2 = _validate.check_unit_interval("b2", b2)
    eps = _validate.check_non_negative("eps", eps)
    hyperparams = LaPropHyperparams(b1, b2, eps)
    storages = moment_storages(mu_dtype, nu_dtype)
    return dense_transformation(laprop_rule(hyperparams), ScaleByLaPropState, storages, hyperparams)
