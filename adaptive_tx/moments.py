r"""The Adam family: bias-corrected first and second moments (Adam, NAdam, AMSGrad, Adamax, RAdam).

All three transformations share the first moment :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t`
and its bias correction :math:`1/(1-\beta_1^t)`, which sits in the rule's *scale*, so the rule's
direction is the raw first moment and the effective learning rate is
:math:`\eta / (1-\beta_1^t) / (\sqrt{\hat v_t} + \epsilon)`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import (
    Rule,
    abs_sq,
    bias_correction,
    dense_transformation,
    ema,
    state_scale,
)
from adaptive_tx.state_precision import moment_storages


class BiasCorrectedMomentsHyperparams(NamedTuple):
    """The numbers the Adam rule is built from (kept in the state as 0-d arrays).

    Attributes:
      b1, b2: :math:`\\beta_1, \\beta_2`.
      eps: ε outside the square root.
      eps_root: ε inside the square root.
      bias_correction_mu, bias_correction_nu: 1.0 to divide the moment by its bias correction.
    """

    b1: Any
    b2: Any
    eps: Any
    eps_root: Any
    bias_correction_mu: Any = True
    bias_correction_nu: Any = True


class ScaleByBiasCorrectedMomentsState(NamedTuple):
    """State of `scale_by_bias_corrected_moments`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the first moment :math:`m_t` (``mu_dtype``).
      nu: params-shaped tree, the second moment :math:`v_t` (``nu_dtype``).
      nu_max: params-shaped tree, the running maximum of :math:`\\hat v_t` (AMSGrad only, else None).
      hyperparams: `BiasCorrectedMomentsHyperparams`, 0-d arrays.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None = None
    hyperparams: BiasCorrectedMomentsHyperparams | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`(1-\beta_1^t)^{-1} / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)`."""
        amsgrad = self.nu_max is not None
        return state_scale(bias_corrected_moments_rule(self.hyperparams, False, amsgrad), self)


class InfNormMomentsHyperparams(NamedTuple):
    """The numbers the Adamax rule is built from (kept in the state as 0-d arrays)."""

    b1: Any
    b2: Any
    eps: Any


class ScaleByInfNormMomentsState(NamedTuple):
    """State of `scale_by_inf_norm_moments`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the first moment :math:`m_t`.
      nu: params-shaped tree, the exponentially weighted infinity norm :math:`u_t`.
      hyperparams: `InfNormMomentsHyperparams`, 0-d arrays.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    hyperparams: InfNormMomentsHyperparams | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`(1-\beta_1^t)^{-1} / u_t` at the last step."""
        return state_scale(inf_norm_moments_rule(self.hyperparams), self)


class RectifiedMomentsHyperparams(NamedTuple):
    """The numbers the RAdam rule is built from (kept in the state as 0-d arrays)."""

    b1: Any
    b2: Any
    eps: Any
    eps_root: Any
    threshold: Any


class ScaleByRectifiedMomentsState(NamedTuple):
    """State of `scale_by_rectified_moments`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the first moment :math:`m_t`.
      nu: params-shaped tree, the second moment :math:`v_t`.
      hyperparams: `RectifiedMomentsHyperparams`, 0-d arrays.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    hyperparams: RectifiedMomentsHyperparams | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale at the last step: :math:`r_t` times Adam's, or :math:`(1-\beta_1^t)^{-1}`."""
        return state_scale(rectified_moments_rule(self.hyperparams, False), self)


def _inv_correction(decay: Any, t: jax.Array, enabled: Any = True) -> jax.Array:
    """:math:`1/(1-\\beta^t)`, or 1 where the correction is disabled."""
    return jnp.where(enabled, 1 / bias_correction(decay, t), 1.0)


def _first_moment_direction(b1: Any, nesterov: bool, debias: Any = True):
    r"""The direction of the Adam family: :math:`m_t`, or NAdam's look-ahead.

    NAdam (optax, Dozat 2016) uses :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`;
    with the scale holding :math:`1/(1-\beta_1^t)`, the direction is
    :math:`\beta_1 \frac{1-\beta_1^t}{1-\beta_1^{t+1}} m_t + (1-\beta_1) g_t`.
    """

    def direction(g, stats, t):
        mu = stats[0]
        if not nesterov:
            return mu
        ratio = bias_correction(b1, t) * _inv_correction(b1, optax.safe_increment(t))
        return (b1 * jnp.where(debias, ratio, 1.0)) * mu + (1 - b1) * g

    return direction


def bias_corrected_moments_rule(
    hyperparams: BiasCorrectedMomentsHyperparams,
    nesterov: bool,
    amsgrad: bool,
) -> Rule:
    r"""The Adam / NAdam / AMSGrad rule for one coordinate (see `scale_by_bias_corrected_moments`).

    Example:
      >>> rule = bias_corrected_moments_rule(
      ...     BiasCorrectedMomentsHyperparams(0.9, 0.999, 0.0, 0.0), False, False)
      >>> stats = rule.accumulate(jnp.array([2.0]), (jnp.zeros(1), jnp.zeros(1)), jnp.int32(1))
      >>> rule.direction(None, stats, 1) * rule.scale(stats, jnp.int32(1))  # Adam's first step: sign(g)
      Array([1.], dtype=float32)
    """
    b1, b2, eps, eps_root, debias_mu, debias_nu = hyperparams

    def accumulate(g, stats, t):
        mu, nu = ema(stats[0], g, b1), ema(stats[1], abs_sq(g), b2)
        if not amsgrad:
            return mu, nu
        nu_max = jnp.maximum(stats[2], nu * _inv_correction(b2, t, debias_nu))
        return mu, nu, nu_max

    def scale(stats, t):
        v = stats[2] if amsgrad else stats[1] * _inv_correction(b2, t, debias_nu)
        return _inv_correction(b1, t, debias_mu) / (jnp.sqrt(v + eps_root) + eps)

    return Rule(
        initial=(0.0, 0.0, 0.0) if amsgrad else (0.0, 0.0),
        accumulate=accumulate,
        direction=_first_moment_direction(b1, nesterov, debias_mu),
        scale=scale,
    )


def _check_moment_args(b1, b2, eps, eps_root=0.0):
    _validate.check_unit_interval("b1", b1)
    _validate.check_unit_interval("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)


def scale_by_bias_corrected_moments(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    nesterov: bool = False,
    amsgrad: bool = False,
    *,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> optax.GradientTransformation:
    r"""Scale by bias-corrected first and second moments (Adam; NAdam; AMSGrad).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
       \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
       u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}.

    ``nesterov`` (NAdam) replaces :math:`\hat m_t` by
    :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`. ``amsgrad`` replaces
    :math:`\hat v_t` by its running maximum :math:`\max_{\tau \le t} \hat v_\tau` (optax's convention;
    torch takes the maximum of the raw :math:`v_t`). The bias corrections are float32 scalars.

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014,
    https://arxiv.org/abs/1412.6980 ; Dozat, "Incorporating Nesterov Momentum into Adam", 2016,
    https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ ; Reddi, Kale & Kumar, "On the Convergence of
    Adam and Beyond", 2018, https://arxiv.org/abs/1904.09237

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: ε outside the square root, >= 0.
      eps_root: ε inside the square root, >= 0 (useful when differentiating through the update).
      mu_dtype: storage of :math:`m_t`: None (the parameters' dtype), a float dtype,
        ``"bfloat16_sr"`` (stochastic rounding), ``"int8_blockwise"`` (8-bit, Dettmers et al.) or
        a storage object (`adaptive_tx.state_precision`). The arithmetic is float32 and rounds
        once, on storing (optax multiplies the stored moment by β1 in the storage precision, so
        with bf16 its moments differ from these by about one bf16 unit).
      nu_dtype: storage of :math:`v_t` (and of the AMSGrad maximum): as ``mu_dtype``, plus
        `adaptive_tx.Factored` (Adafactor's factored :math:`v_t`) and `adaptive_tx.BlockMean`
        (one :math:`v_t` per block, Adam-mini).
      nesterov: use NAdam's look-ahead first moment.
      amsgrad: use the running maximum of the second moment.
      bias_correction_mu: divide :math:`m_t` by :math:`1-\beta_1^t`.
      bias_correction_nu: divide :math:`v_t` by :math:`1-\beta_2^t`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByBiasCorrectedMomentsState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_bias_corrected_moments()
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([0.5, -3.0]), state)
      >>> updates  # the first Adam step is the sign of the gradient
      Array([ 1., -1.], dtype=float32)
    """
    _check_moment_args(b1, b2, eps, eps_root)
    hyperparams = BiasCorrectedMomentsHyperparams(
        b1, b2, eps, eps_root, bias_correction_mu, bias_correction_nu
    )
    rule = bias_corrected_moments_rule(hyperparams, nesterov, amsgrad)
    mu, nu = moment_storages(mu_dtype, nu_dtype)
    storages = (mu, nu, nu) if amsgrad else (mu, nu)
    return dense_transformation(rule, ScaleByBiasCorrectedMomentsState, storages, hyperparams)


def inf_norm_moments_rule(hyperparams: InfNormMomentsHyperparams) -> Rule:
    r"""The Adamax rule for one coordinate (see `scale_by_inf_norm_moments`).

    Example:
      >>> rule = inf_norm_moments_rule(InfNormMomentsHyperparams(0.9, 0.999, 0.0))
      >>> rule.accumulate(jnp.array([-2.0]), (jnp.zeros(1), jnp.ones(1)), jnp.int32(1))
      (Array([-0.2], dtype=float32), Array([2.], dtype=float32))
    """
    b1, b2, eps = hyperparams

    def accumulate(g, stats, t):
        mu, nu = stats
        return ema(mu, g, b1), jnp.maximum(b2 * nu, jnp.abs(g) + eps)

    return Rule(
        initial=(0.0, 0.0),
        accumulate=accumulate,
        direction=_first_moment_direction(b1, nesterov=False),
        scale=lambda stats, t: _inv_correction(b1, t) / stats[1],
    )


def scale_by_inf_norm_moments(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Scale by a bias-corrected first moment over an exponentially weighted infinity norm (Adamax).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \qquad
       \text{update}_t = \frac{m_t}{(1-\beta_1^t)\, u_t}.

    ε sits inside the maximum (optax and torch); keras adds it to the denominator instead.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.1,
    https://arxiv.org/abs/1412.6980

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: added to :math:`|g_t|`, >= 0.
      mu_dtype, nu_dtype: storage of :math:`m_t` and :math:`u_t`, see
        `scale_by_bias_corrected_moments`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByInfNormMomentsState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_inf_norm_moments(eps=0.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([0.5, -4.0]), state)
      >>> updates
      Array([ 1., -1.], dtype=float32)
    """
    _check_moment_args(b1, b2, eps)
    hyperparams = InfNormMomentsHyperparams(b1, b2, eps)
    rule = inf_norm_moments_rule(hyperparams)
    storages = moment_storages(mu_dtype, nu_dtype)
    return dense_transformation(rule, ScaleByInfNormMomentsState, storages, hyperparams)


def rectified_moments_rule(hyperparams: RectifiedMomentsHyperparams, nesterov: bool) -> Rule:
    r"""The RAdam rule for one coordinate: Adam's rule with a rectified scale.

    See `scale_by_rectified_moments`.

    Example:
      >>> rule = rectified_moments_rule(
      ...     RectifiedMomentsHyperparams(0.9, 0.999, 1e-8, 0.0, 5.0), False)
      >>> rule.scale((jnp.ones(1), jnp.ones(1)), jnp.int32(1))  # rho_1 < 5: plain SGD with momentum
      Array([10.], dtype=float32)
    """
    b1, b2, eps, eps_root, threshold = hyperparams
    adam_hyperparams = BiasCorrectedMomentsHyperparams(b1, b2, eps, eps_root)
    adam = bias_corrected_moments_rule(adam_hyperparams, nesterov, amsgrad=False)
    rho_inf = 2 / (1 - b2) - 1

    def scale(stats, t):
        bc2 = bias_correction(b2, t)
        rho = rho_inf - 2 * t * (1 - bc2) / bc2
        r = jnp.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        return jnp.where(rho >= threshold, r * adam.scale(stats, t), _inv_correction(b1, t))

    return adam._replace(scale=scale)


def scale_by_rectified_moments(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Scale by rectified bias-corrected moments (RAdam).

    .. math::

       \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
       \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \quad
       r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}},

    .. math::

       u_t = r_t \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}
       \text{ if } \rho_t \ge \text{threshold, else } \hat m_t,

    with :math:`\hat m_t, \hat v_t` as in Adam (NAdam's :math:`\hat m_t` with ``nesterov``). The
    variance of the adaptive step is undefined during the first steps; RAdam falls back to SGD with
    momentum until :math:`\rho_t` passes the threshold (5 in the paper and optax; torch uses 5 too).

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", 2019,
    https://arxiv.org/abs/1908.03265

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: ε outside the square root, >= 0.
      eps_root: ε inside the square root, >= 0.
      threshold: the :math:`\rho_t` from which the adaptive step is used.
      nesterov: use NAdam's look-ahead first moment.
      mu_dtype, nu_dtype: storage of :math:`m_t` and :math:`v_t`, see
        `scale_by_bias_corrected_moments`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByRectifiedMomentsState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_rectified_moments()
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([0.5, -3.0]), state)
      >>> updates.round(4)  # the first steps are momentum SGD: the bias-corrected gradient itself
      Array([ 0.5, -3. ], dtype=float32)
    """
    _check_moment_args(b1, b2, eps, eps_root)
    hyperparams = RectifiedMomentsHyperparams(b1, b2, eps, eps_root, threshold)
    rule = rectified_moments_rule(hyperparams, nesterov)
    storages = moment_storages(mu_dtype, nu_dtype)
    return dense_transformation(rule, ScaleByRectifiedMomentsState, storages, hyperparams)
