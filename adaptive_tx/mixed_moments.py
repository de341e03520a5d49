r"""Adam with a mixture of first moments (Adan, AdEMAMix).

Both keep Adam's second moment for the per-coordinate scale and replace its single first moment
by a combination of two: Adan adds a moment of gradient *differences* (a Nesterov look-ahead that
needs no extra gradient evaluation), AdEMAMix adds a *slow* moment that remembers gradients
for tens of thousands of steps. The combination is the rule's direction; the scale is Adam's
:math:`1/(\sqrt{\hat n_t + \epsilon_{root}} + \epsilon)`, so the effective learning rate is
Adam's without its :math:`1/(1-\beta_1^t)` (which sits in the direction).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, abs_sq, bias_correction, dense_transformation, ema, state_scale
from adaptive_tx.state_precision import StorageSpec, moment_storages


def _root_scale(b, eps, eps_root):
    """:math:`1/(\\sqrt{n_t/(1-\\beta^t) + \\epsilon_{root}} + \\epsilon)` of a statistic ``n``."""

    def scale(stats, t, index):
        return 1 / (jnp.sqrt(stats[index] / bias_correction(b, t) + eps_root) + eps)

    return scale


class AdanHyperparams(NamedTuple):
    """The numbers the Adan rule is built from (kept in the state, packed in one array).

    Attributes:
      b1, b2, b3: the decays of the gradient, difference and squared-term moments (optax's
        convention: the weight of the *old* value).
      eps, eps_root: ε outside and inside the square root.
    """

    b1: float | jax.Array
    b2: float | jax.Array
    b3: float | jax.Array
    eps: float | jax.Array
    eps_root: float | jax.Array


class ScaleByAdanState(NamedTuple):
    """State of `scale_by_adan`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      m: params-shaped tree, the moment of gradients :math:`m_t`.
      v: params-shaped tree, the moment of gradient differences :math:`v_t`.
      n: params-shaped tree, the moment of the squared look-ahead gradient :math:`n_t`.
      g: params-shaped tree, the last gradient :math:`g_t` (for the next difference).
      packed_hyperparams: the `AdanHyperparams` values in one float array.

    Example:
      >>> tx = scale_by_adan(eps=0.0, eps_root=0.0)
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.g, state.per_coordinate_scale()  # 1 / sqrt(n_1 / (1 - 0.99)) = 1 / |g|
      (Array([2.], dtype=float32), Array([0.5], dtype=float32))
    """

    count: jax.Array
    m: optax.Updates
    v: optax.Updates
    n: optax.Updates
    g: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`1/(\sqrt{\hat n_t + \epsilon_{root}} + \epsilon)`, last step."""
        return state_scale(adan_rule(AdanHyperparams(*self.packed_hyperparams)), self)


def adan_rule(hyperparams: AdanHyperparams) -> Rule:
    r"""The Adan rule for one coordinate (see `scale_by_adan`).

    Example:
      >>> rule = adan_rule(AdanHyperparams(0.98, 0.92, 0.99, 0.0, 0.0))
      >>> stats = (jnp.zeros(1),) * 3 + (jnp.array([1.0]),)
      >>> rule.accumulate(jnp.array([3.0]), stats, jnp.int32(2))[1]  # 0.08 (3 - 1)
      Array([0.16000001], dtype=float32)
    """
    b1, b2, b3, eps, eps_root = hyperparams
    root_scale = _root_scale(b3, eps, eps_root)

    def accumulate(g, stats, t):
        m, v, n, previous = stats
        diff = jnp.where(t == 1, 0.0, g - previous)
        look_ahead = g + (1 - b2) * diff
        return ema(m, g, b1), ema(v, diff, b2), ema(n, abs_sq(look_ahead), b3), g

    def direction(g, stats, t):
        m, v = stats[0], stats[1]
        return m / bias_correction(b1, t) + (1 - b2) * (v / bias_correction(b2, t))

    return Rule(
        initial=(0.0, 0.0, 0.0, 0.0),
        accumulate=accumulate,
        direction=direction,
        scale=lambda stats, t: root_scale(stats, t, 2),
    )


def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by Adan's moments of gradients, gradient differences and squared look-ahead gradients.

    With :math:`\Delta_t = g_t - g_{t-1}` (:math:`\Delta_1 = 0`):

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) \Delta_t, \quad
       n_t = \beta_3 n_{t-1} + (1-\beta_3) \big(g_t + (1-\beta_2)\Delta_t\big)^2,

    .. math::

       u_t = \frac{\hat m_t + (1-\beta_2)\, \hat v_t}{\sqrt{\hat n_t + \epsilon_{root}} + \epsilon},

    with hats the bias corrections :math:`1/(1-\beta^t)`. The β are optax's (the weight of the
    old value: the paper's :math:`1-\beta`). On a row-sparse leaf a row is updated when it is
    looked up (lazy, as every rule), so its difference is taken against the gradient it last
    received, not against a zero of the steps it missed.

    Reference: Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
    Models", 2022, https://arxiv.org/abs/2208.06677

    Args:
      b1, b2, b3: the decays, each in [0, 1).
      eps: ε outside the square root, >= 0.
      eps_root: ε inside the square root, >= 0.
      mu_dtype: storage of :math:`m_t, v_t` and of the last gradient.
      nu_dtype: storage of :math:`n_t`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByAdanState`.

    Example:
      >>> tx = scale_by_adan(eps=0.0)
      >>> updates, _ = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates  # the first step is the sign of the gradient
      Array([ 1., -1.], dtype=float32)
    """
    b1 = _validate.check_unit_interval("b1", b1)
    b2 = _validate.check_unit_interval("b2", b2)
    b3 = _validate.check_unit_interval("b3", b3)
    eps = _validate.check_non_negative("eps", eps)
    eps_root = _validate.check_non_negative("eps_root", eps_root)
    hyperparams = AdanHyperparams(b1, b2, b3, eps, eps_root)
    mu, nu = moment_storages(mu_dtype, nu_dtype)
    storages = (mu, mu, nu, mu)  # m, v, n, the last gradient
    return dense_transformation(adan_rule(hyperparams), ScaleByAdanState, storages, hyperparams)


class AdEMAMixHyperparams(NamedTuple):
    """The numbers AdEMAMix's scale is built from (kept in the state, packed in one array).

    ``b3`` and ``alpha`` may be schedules; they enter the direction only, and are not kept.

    Attributes:
      b1, b2: :math:`\\beta_1, \\beta_2`.
      eps, eps_root: ε outside and inside the square root.
    """

    b1: float | jax.Array
    b2: float | jax.Array
    eps: float | jax.Array
    eps_root: float | jax.Array


class ScaleByAdEMAMixState(NamedTuple):
    """State of `scale_by_ademamix`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      m1: params-shaped tree, the fast moment :math:`m^{(1)}_t`.
      m2: params-shaped tree, the slow moment :math:`m^{(2)}_t`.
      nu: params-shaped tree, the second moment :math:`\\nu_t`.
      packed_hyperparams: the `AdEMAMixHyperparams` values in one float array.

    Example:
      >>> tx = scale_by_ademamix(eps=0.0)
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.per_coordinate_scale()  # 1 / sqrt(nu_1 / (1 - 0.999)), 1 / |g| in float32
      Array([0.49999678], dtype=float32)
    """

    count: jax.Array
    m1: optax.Updates
    m2: optax.Updates
    nu: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`1/(\sqrt{\hat\nu_t + \epsilon_{root}} + \epsilon)`, last step."""
        h = AdEMAMixHyperparams(*self.packed_hyperparams)
        return state_scale(ademamix_rule(h, 0.0, 0.0), self)


def ademamix_rule(
    hyperparams: AdEMAMixHyperparams,
    b3: optax.ScalarOrSchedule,
    alpha: optax.ScalarOrSchedule,
) -> Rule:
    r"""The AdEMAMix rule for one coordinate (see `scale_by_ademamix`).

    ``b3`` and ``alpha`` are numbers or schedules of the step count before the step (:math:`t-1`).

    Example:
      >>> rule = ademamix_rule(AdEMAMixHyperparams(0.9, 0.999, 0.0, 0.0), 0.5, 2.0)
      >>> stats = rule.accumulate(jnp.array([4.0]), (jnp.zeros(1),) * 3, jnp.int32(1))
      >>> rule.direction(None, stats, jnp.int32(1))  # 0.4 / 0.1 + 2 * 0.5 * 4
      Array([8.], dtype=float32)
    """
    b1, b2, eps, eps_root = hyperparams
    root_scale = _root_scale(b2, eps, eps_root)

    def at(value, t):
        return value(t - 1) if callable(value) else value

    def accumulate(g, stats, t):
        m1, m2, nu = stats
        return ema(m1, g, b1), ema(m2, g, at(b3, t)), ema(nu, abs_sq(g), b2)

    return Rule(
        initial=(0.0, 0.0, 0.0),
        accumulate=accumulate,
        direction=lambda g, stats, t: stats[0] / bias_correction(b1, t) + at(alpha, t) * stats[1],
        scale=lambda stats, t: root_scale(stats, t, 2),
    )


def _check_scheduled(name, value, check):
    """A number is checked now; a schedule's values are checked as the step sees them."""
    if callable(value):
        return lambda count: check(name, value(count))
    return check(name, value)


def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: optax.ScalarOrSchedule = 0.9999,
    alpha: optax.ScalarOrSchedule = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: StorageSpec = None,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by a mixture of a fast and a slow moment over Adam's second moment (AdEMAMix).

    .. math::

       m^{(1)}_t = \beta_1 m^{(1)}_{t-1} + (1-\beta_1) g_t, \quad
       m^{(2)}_t = \beta_3 m^{(2)}_{t-1} + (1-\beta_3) g_t, \quad
       \nu_t = \beta_2 \nu_{t-1} + (1-\beta_2) g_t^2,

    .. math::

       u_t = \frac{m^{(1)}_t/(1-\beta_1^t) + \alpha\, m^{(2)}_t}{\sqrt{\nu_t/(1-\beta_2^t) +
       \epsilon_{root}} + \epsilon}.

    The slow moment (:math:`\beta_3 = 0.9999`: a memory of ~10^4 steps) is not bias-corrected;
    the paper warms :math:`\alpha` and :math:`\beta_3` up with schedules, which ``alpha`` and
    ``b3`` accept (functions of the step count before the step, as optax calls them).

    Reference: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
    2024, https://arxiv.org/abs/2409.03137

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      b3: :math:`\beta_3` in [0, 1), or a schedule.
      alpha: :math:`\alpha >= 0`, or a schedule.
      eps: ε outside the square root, >= 0.
      eps_root: ε inside the square root, >= 0.
      mu_dtype: storage of both first moments.
      nu_dtype: storage of :math:`\nu_t`; None keeps it as optax does, in ``mu_dtype``.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByAdEMAMixState`.

    Example:
      >>> tx = scale_by_ademamix(alpha=0.0, eps=0.0)
      >>> updates, _ = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # alpha = 0 is Adam: the first step is the sign of the gradient
      Array([ 1., -1.], dtype=float32)
    """
    b1 = _validate.check_unit_interval("b1", b1)
    b2 = _validate.check_unit_interval("b2", b2)
    b3 = _check_scheduled("b3", b3, _validate.check_unit_interval)
    alpha = _check_scheduled("alpha", alpha, _validate.check_non_negative)
    eps = _validate.check_non_negative("eps", eps)
    eps_root = _validate.check_non_negative("eps_root", eps_root)
    hyperparams = AdEMAMixHyperparams(b1, b2, eps, eps_root)
    mu, nu = moment_storages(mu_dtype, mu_dtype if nu_dtype is None else nu_dtype)
    rule = ademamix_rule(hyperparams, b3, alpha)
    return dense_transformation(rule, ScaleByAdEMAMixState, (mu, mu, nu), hyperparams)
