r"""The Adam family: bias-corrected first and second moments (Adam, NAdam, AMSGrad, Adamax, RAdam).

All three transformations share the first moment :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t`
and its bias correction :math:`1/(1-\beta_1^t)`, which sits in the rule's *scale*, so the rule's
direction is the raw first moment and the effective learning rate is
:math:`\eta / (1-\beta_1^t) / (\sqrt{\hat v_t} + \epsilon)`.
"""

from __future__ import annotations

import math
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
    """The numbers the Adam rule is built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      b1, b2: :math:`\\beta_1, \\beta_2`.
      eps: ε outside the square root.
      eps_root: ε inside the square root.
      bias_correction_mu, bias_correction_nu: 1.0 to divide the moment by its bias correction.
      eps_hat: 1.0 to add ε to the uncorrected :math:`\\sqrt{v_t}` (ε-hat, keras), 0.0 to
        :math:`\\sqrt{\\hat v_t}` (optax, torch).
      amsgrad_raw_max: 1.0 for the AMSGrad maximum of the raw :math:`v_t` (torch, keras), 0.0 for
        the maximum of :math:`\\hat v_t` (optax).
      momentum_decay: :math:`\\psi` of NAdam's momentum schedule (torch, keras); ``inf`` for
        optax's constant :math:`\\mu_t = \\beta_1`.
    """

    b1: Any
    b2: Any
    eps: Any
    eps_root: Any
    bias_correction_mu: Any = True
    bias_correction_nu: Any = True
    eps_hat: Any = False
    amsgrad_raw_max: Any = False
    momentum_decay: Any = float("inf")


class ScaleByBiasCorrectedMomentsState(NamedTuple):
    """State of `scale_by_bias_corrected_moments`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the first moment :math:`m_t` (``mu_dtype``).
      nu: params-shaped tree, the second moment :math:`v_t` (``nu_dtype``).
      nu_max: params-shaped tree, the running maximum of :math:`\\hat v_t` (AMSGrad only, else None).
      packed_hyperparams: the `BiasCorrectedMomentsHyperparams` values in one float array
        (not ``hyperparams``: ``optax.inject_hyperparams`` names its own field so).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_bias_corrected_moments(eps=0.0)
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.mu, state.nu, state.per_coordinate_scale()  # 0.1 g, 0.001 g², 1 / (0.1 |g|)
      (Array([0.2], dtype=float32), Array([0.004], dtype=float32), Array([4.99997], dtype=float32))
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None = None
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`(1-\beta_1^t)^{-1} / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)`."""
        amsgrad = self.nu_max is not None
        hyperparams = BiasCorrectedMomentsHyperparams(*self.packed_hyperparams)
        return state_scale(bias_corrected_moments_rule(hyperparams, False, amsgrad), self)


class InfNormMomentsHyperparams(NamedTuple):
    """The numbers the Adamax rule is built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      b1, b2, eps: :math:`\\beta_1, \\beta_2, \\epsilon`.
      eps_in_max: 1.0 to add ε to :math:`|g_t|` inside the maximum (optax, torch), 0.0 to add it to
        :math:`u_t` in the denominator (keras).
    """

    b1: Any
    b2: Any
    eps: Any
    eps_in_max: Any = True


class ScaleByInfNormMomentsState(NamedTuple):
    """State of `scale_by_inf_norm_moments`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the first moment :math:`m_t`.
      nu: params-shaped tree, the exponentially weighted infinity norm :math:`u_t`.
      packed_hyperparams: the `InfNormMomentsHyperparams` values in one float array
        (not ``hyperparams``: ``optax.inject_hyperparams`` names its own field so).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_inf_norm_moments(eps=0.0)
      >>> _, state = tx.update(jnp.array([-4.0]), tx.init(jnp.zeros(1)))
      >>> state.mu, state.nu, state.per_coordinate_scale()  # 1 / (0.1 * 4)
      (Array([-0.4], dtype=float32), Array([4.], dtype=float32), Array([2.5], dtype=float32))
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`(1-\beta_1^t)^{-1} / (u_t [+ \epsilon])` at the last step."""
        return state_scale(
            inf_norm_moments_rule(InfNormMomentsHyperparams(*self.packed_hyperparams)), self
        )


class RectifiedMomentsHyperparams(NamedTuple):
    """The numbers the RAdam rule is built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      b1, b2, eps, eps_root: as in `BiasCorrectedMomentsHyperparams`.
      threshold: the :math:`\\rho_t` from which the adaptive step is used.
      eps_hat: 1.0 to add ε to the uncorrected :math:`\\sqrt{v_t}` (torch), 0.0 not to (optax).
      strict_threshold: 1.0 for :math:`\\rho_t > \\text{threshold}` (torch), 0.0 for
        :math:`\\ge` (optax).
      rho_inf: :math:`\\rho_\\infty = 2/(1-\\beta_2) - 1`, computed once from the β2 given to the
        constructor (None: from ``b2``). Kept because it amplifies the rounding of β2 by
        :math:`1/(1-\\beta_2)`: recomputed from the stored float32 β2 it would be 1.3e-4 off for
        β2 = 0.999, and the rebuilt scale would not be the one the update used.
    """

    b1: Any
    b2: Any
    eps: Any
    eps_root: Any
    threshold: Any
    eps_hat: Any = False
    strict_threshold: Any = False
    rho_inf: Any = None


class ScaleByRectifiedMomentsState(NamedTuple):
    """State of `scale_by_rectified_moments`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the first moment :math:`m_t`.
      nu: params-shaped tree, the second moment :math:`v_t`.
      packed_hyperparams: the `RectifiedMomentsHyperparams` values in one float array
        (not ``hyperparams``: ``optax.inject_hyperparams`` names its own field so).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_rectified_moments()
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.mu, state.per_coordinate_scale()  # not rectified yet: 1 / (1 - 0.9)
      (Array([0.2], dtype=float32), Array([10.], dtype=float32))
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale at the last step: :math:`r_t` times Adam's, or :math:`(1-\beta_1^t)^{-1}`."""
        return state_scale(
            rectified_moments_rule(
                RectifiedMomentsHyperparams(*self.packed_hyperparams), False
            ),
            self,
        )


def _inv_correction(decay: Any, t: jax.Array, enabled: Any = True) -> jax.Array:
    """:math:`1/(1-\\beta^t)`, or 1 where the correction is disabled."""
    return jnp.where(enabled, 1 / bias_correction(decay, t), 1.0)


_LOG_SERIES_TERMS = 64  # 2^-64: the series for the momentum product is exact in float64


def _constant_momentum(momentum_decay: Any) -> bool:
    """Whether ψ is the Python ∞ of a constant momentum: the series below is then exactly 0, and
    skipping it keeps optax's arithmetic (and graph) for Adam and optax's NAdam."""
    return isinstance(momentum_decay, float) and math.isinf(momentum_decay)


def _momentum_schedule_term(momentum_decay: Any, t: jax.Array) -> Any:
    """:math:`\\tfrac12\\, 0.96^{t\\psi}` (0 for ψ = ∞), so that μ_t = β1 (1 - term)."""
    if _constant_momentum(momentum_decay):
        return 0.0
    dtype = jnp.result_type(float)
    return 0.5 * jnp.asarray(0.96, dtype) ** (jnp.asarray(t, dtype) * momentum_decay)


def momentum_product(b1: Any, momentum_decay: Any, t: jax.Array) -> jax.Array:
    r"""NAdam's momentum product :math:`\Pi_t = \prod_{i=1}^t \mu_i`, in closed form.

    With Dozat's schedule :math:`\mu_i = \beta_1 (1 - \tfrac12 q^i)`, :math:`q = 0.96^\psi`
    (torch's ``momentum_decay`` ψ; keras 3 uses ψ = 1; ψ = ∞ is optax's constant
    :math:`\mu_i = \beta_1`), expanding :math:`\log(1 - x) = -\sum_k x^k/k` for
    :math:`x = q^i/2 \le 1/2` and summing the geometric series over :math:`i` gives

    .. math::

       \Pi_t = \beta_1^t \exp\Big(-\sum_{k \ge 1} \frac{2^{-k}}{k}\,
                q^k \frac{1 - q^{kt}}{1 - q^k}\Big),

    64 terms (a relative error below :math:`2^{-64}`) whatever :math:`t`: no running product in the
    state and no loop over the steps, so the rule stays a function of the step alone. It is
    :math:`1 - ` the first moment's bias correction: :math:`\beta_1^t` for a constant momentum.

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", 2016,
    https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ

    Example:
      >>> momentum_product(0.9, 0.004, jnp.int32(2))  # 0.9 (1 - 0.96**0.004/2) 0.9 (1 - 0.96**0.008/2)
      Array(0.2026, dtype=float32)
      >>> momentum_product(0.9, float("inf"), jnp.int32(2))  # constant momentum: 0.9 ** 2
      Array(0.81, dtype=float32)
    """
    dtype = jnp.result_type(float)
    if _constant_momentum(momentum_decay):
        return jnp.asarray(b1, dtype) ** t
    k = jnp.arange(1, _LOG_SERIES_TERMS + 1, dtype=dtype)
    log_q = jnp.asarray(momentum_decay, dtype) * jnp.log(jnp.asarray(0.96, dtype))
    steps = jnp.asarray(t, dtype)
    # sum_{i=1}^t q^(i k), written with expm1 to keep its precision when q is close to 1.
    geometric = jnp.where(
        log_q == 0,
        steps,
        jnp.exp(k * log_q) * jnp.expm1(k * steps * log_q) / jnp.expm1(k * log_q),
    )
    log_schedule = -jnp.sum(0.5**k / k * geometric)
    return jnp.asarray(b1, dtype) ** t * jnp.exp(log_schedule)


def _first_moment_correction(b1: Any, momentum_decay: Any, t: jax.Array) -> jax.Array:
    """:math:`1 - \\Pi_t`: :math:`1-\\beta_1^t`, or NAdam's with a momentum schedule."""
    return 1 - momentum_product(b1, momentum_decay, t)


def _first_moment_direction(
    b1: Any, nesterov: bool, debias: Any = True, momentum_decay: Any = float("inf")
):
    r"""The direction of the Adam family: :math:`m_t`, or NAdam's look-ahead.

    NAdam (Dozat 2016; torch, keras) uses
    :math:`\frac{\mu_{t+1} m_t}{1-\Pi_{t+1}} + \frac{(1-\mu_t) g_t}{1-\Pi_t}` with
    :math:`\mu_t = \beta_1(1 - \tfrac12 0.96^{t\psi})` and :math:`\Pi_t` their product
    (`momentum_product`); optax takes :math:`\mu_t = \beta_1`, :math:`\Pi_t = \beta_1^t`.
    With the scale holding :math:`1/(1-\Pi_t)`, the direction is
    :math:`\mu_{t+1} \frac{1-\Pi_t}{1-\Pi_{t+1}} m_t + (1-\mu_t) g_t`.
    """

    def direction(g, stats, t):
        mu = stats[0]
        if not nesterov:
            return mu
        next_t = optax.safe_increment(t)
        ratio = _first_moment_correction(b1, momentum_decay, t) * (
            1 / _first_moment_correction(b1, momentum_decay, next_t)
        )
        mu_next = b1 * (1 - _momentum_schedule_term(momentum_decay, next_t))
        # 1 - mu_t, written so that it is exactly (1 - b1) for a constant momentum.
        one_minus_mu = (1 - b1) + b1 * _momentum_schedule_term(momentum_decay, t)
        return (mu_next * jnp.where(debias, ratio, 1.0)) * mu + one_minus_mu * g

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
    h = hyperparams
    b1, b2, eps, eps_root = h.b1, h.b2, h.eps, h.eps_root

    def accumulate(g, stats, t):
        mu, nu = ema(stats[0], g, b1), ema(stats[1], abs_sq(g), b2)
        if not amsgrad:
            return mu, nu
        corrected = nu * jnp.where(
            h.amsgrad_raw_max, 1.0, _inv_correction(b2, t, h.bias_correction_nu)
        )
        return mu, nu, jnp.maximum(stats[2], corrected)

    def scale(stats, t):
        nu_correction = _inv_correction(b2, t, h.bias_correction_nu)
        if amsgrad:
            v = stats[2] * jnp.where(h.amsgrad_raw_max, nu_correction, 1.0)
        else:
            v = stats[1] * nu_correction
        # eps-hat: eps added to sqrt(v_t) before the correction is eps / sqrt(1 - b2^t) after it.
        eps_t = eps * jnp.where(h.eps_hat, jnp.sqrt(nu_correction), 1.0)
        mu_correction = _first_moment_correction(b1, h.momentum_decay, t)
        return jnp.where(h.bias_correction_mu, 1 / mu_correction, 1.0) / (
            jnp.sqrt(v + eps_root) + eps_t
        )

    return Rule(
        initial=(0.0, 0.0, 0.0) if amsgrad else (0.0, 0.0),
        accumulate=accumulate,
        direction=_first_moment_direction(b1, nesterov, h.bias_correction_mu, h.momentum_decay),
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
    eps_hat: bool = False,
    amsgrad_raw_max: bool = False,
    momentum_decay: float | None = None,
) -> optax.GradientTransformation:
    r"""Scale by bias-corrected first and second moments (Adam; NAdam; AMSGrad).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
       \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
       u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}.

    ``nesterov`` (NAdam) replaces :math:`\hat m_t` by
    :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`; with
    ``momentum_decay`` ψ (Dozat's schedule, torch and keras) by
    :math:`\mu_{t+1} m_t/(1-\Pi_{t+1}) + (1-\mu_t) g_t/(1-\Pi_t)`, where
    :math:`\mu_t = \beta_1(1 - \tfrac12 0.96^{t\psi})` and :math:`\Pi_t = \prod_{i\le t}\mu_i`
    (`momentum_product`). ``amsgrad`` replaces :math:`\hat v_t` by its running maximum
    :math:`\max_{\tau \le t} \hat v_\tau` (optax), or with ``amsgrad_raw_max`` by
    :math:`\max_{\tau \le t} v_\tau / (1-\beta_2^t)` (torch, keras). ``eps_hat`` adds ε to the
    uncorrected root, :math:`u_t = \hat m_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon)`, which is
    Kingma & Ba's "ε-hat" form that keras uses. The bias corrections are float32 scalars.

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
      eps_hat: add ε to :math:`\sqrt{v_t}` before its bias correction (keras) rather than after.
      amsgrad_raw_max: with ``amsgrad``, the maximum of the raw :math:`v_t`, corrected afterwards
        (torch, keras), rather than the maximum of :math:`\hat v_t` (optax).
      momentum_decay: ψ >= 0 of NAdam's momentum schedule (torch: 0.004; keras 3: 1), only with
        ``nesterov``; None for optax's constant :math:`\mu_t = \beta_1`.

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
    if momentum_decay is not None:
        _validate.check_non_negative("momentum_decay", momentum_decay)
        if not nesterov:
            raise ValueError(
                f"momentum_decay={momentum_decay!r} is NAdam's momentum schedule: it needs "
                "nesterov=True"
            )
    hyperparams = BiasCorrectedMomentsHyperparams(
        b1,
        b2,
        eps,
        eps_root,
        bias_correction_mu,
        bias_correction_nu,
        eps_hat=eps_hat,
        amsgrad_raw_max=amsgrad_raw_max,
        momentum_decay=float("inf") if momentum_decay is None else momentum_decay,
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
    b1, b2, eps, eps_in_max = hyperparams
    eps_max, eps_denominator = jnp.where(eps_in_max, eps, 0.0), jnp.where(eps_in_max, 0.0, eps)

    def accumulate(g, stats, t):
        mu, nu = stats
        return ema(mu, g, b1), jnp.maximum(b2 * nu, jnp.abs(g) + eps_max)

    return Rule(
        initial=(0.0, 0.0),
        accumulate=accumulate,
        direction=_first_moment_direction(b1, nesterov=False),
        scale=lambda stats, t: _inv_correction(b1, t) / (stats[1] + eps_denominator),
    )


def scale_by_inf_norm_moments(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    *,
    eps_in_max: bool = True,
) -> optax.GradientTransformation:
    r"""Scale by a bias-corrected first moment over an exponentially weighted infinity norm (Adamax).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \qquad
       \text{update}_t = \frac{m_t}{(1-\beta_1^t)\, u_t}.

    ε sits inside the maximum (optax and torch); keras adds it to the denominator instead,
    :math:`u_t = \max(\beta_2 u_{t-1}, |g_t|)`, :math:`\text{update}_t = m_t / ((1-\beta_1^t)(u_t + \epsilon))`
    (``eps_in_max=False``).

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.1,
    https://arxiv.org/abs/1412.6980

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: added to :math:`|g_t|` (or to :math:`u_t`), >= 0.
      eps_in_max: add ε to :math:`|g_t|` inside the maximum (optax, torch) rather than to
        :math:`u_t` in the denominator (keras).
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
    hyperparams = InfNormMomentsHyperparams(b1, b2, eps, eps_in_max)
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
    b1, b2, eps, eps_root, threshold, eps_hat, strict, rho_inf = hyperparams
    adam_hyperparams = BiasCorrectedMomentsHyperparams(b1, b2, eps, eps_root, eps_hat=eps_hat)
    adam = bias_corrected_moments_rule(adam_hyperparams, nesterov, amsgrad=False)
    if rho_inf is None:
        rho_inf = 2 / (1 - b2) - 1

    def scale(stats, t):
        bc2 = bias_correction(b2, t)
        rho = rho_inf - 2 * t * (1 - bc2) / bc2
        r = jnp.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        rectify = jnp.where(strict, rho > threshold, rho >= threshold)
        return jnp.where(rectify, r * adam.scale(stats, t), _inv_correction(b1, t))

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
    *,
    eps_hat: bool = False,
    strict_threshold: bool = False,
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
    momentum until :math:`\rho_t` passes the threshold (5 in the paper, optax and torch; torch
    rectifies where :math:`\rho_t > 5`, ``strict_threshold``, and adds ε to the uncorrected
    :math:`\sqrt{v_t}`, ``eps_hat``: :math:`r_t \hat m_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon)`).

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", 2019,
    https://arxiv.org/abs/1908.03265

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: ε outside the square root, >= 0.
      eps_root: ε inside the square root, >= 0.
      threshold: the :math:`\rho_t` from which the adaptive step is used.
      nesterov: use NAdam's look-ahead first moment.
      eps_hat: add ε to :math:`\sqrt{v_t}` before its bias correction (torch) rather than after.
      strict_threshold: rectify where :math:`\rho_t >` threshold (torch) rather than :math:`\ge`.
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
    hyperparams = RectifiedMomentsHyperparams(
        b1, b2, eps, eps_root, threshold, eps_hat, strict_threshold, rho_inf=2 / (1 - b2) - 1
    )
    rule = rectified_moments_rule(hyperparams, nesterov)
    storages = moment_storages(mu_dtype, nu_dtype)
    return dense_transformation(rule, ScaleByRectifiedMomentsState, storages, hyperparams)
