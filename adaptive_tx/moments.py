r"""The Adam family: bias-corrected first and second moments (Adam, NAdam, AMSGrad, Adamax, RAdam).

All three transformations share the first moment :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t`
and its bias correction :math:`1/(1-\beta_1^t)`, which sits in the rule's *scale*, so the rule's
direction is the raw first moment and the effective learning rate is
:math:`\eta / (1-\beta_1^t) / (\sqrt{\hat v_t} + \epsilon)`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, abs_sq, dense_transformation, ema, state_scale
from adaptive_tx.scalars import (
    _constant_momentum,
    _correction,
    _first_moment_correction,
    _momentum_schedule_term,
    _select,
    momentum_product,  # noqa: F401 (public here too: adaptive_tx.moments.momentum_product)
    rectification_rho,
)
from adaptive_tx.state_precision import StorageSpec, moment_storages


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
      momentum_decay: :math:`\\psi` of NAdam's momentum schedule (torch, keras); None for
        optax's constant :math:`\\mu_t = \\beta_1` (stored as -1: a state holds finite numbers only).
      exact_scalars: 1.0 to compute the bias corrections :math:`1-\\beta^t` as float64 gives them
        (torch), from :math:`1-\\beta`; 0.0 from β rounded to float32 (optax, keras).
      one_minus_b1, one_minus_b2: :math:`1-\\beta_1, 1-\\beta_2`, computed in float64 from the
        constructor's β (None: from ``b1``, ``b2``).
    """

    b1: float | jax.Array
    b2: float | jax.Array
    eps: float | jax.Array
    eps_root: float | jax.Array
    bias_correction_mu: float | jax.Array = True
    bias_correction_nu: float | jax.Array = True
    eps_hat: float | jax.Array = False
    amsgrad_raw_max: float | jax.Array = False
    momentum_decay: float | jax.Array | None = None
    exact_scalars: float | jax.Array = False
    one_minus_b1: float | jax.Array | None = None
    one_minus_b2: float | jax.Array | None = None


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
      exact_scalars, one_minus_b1: as in `BiasCorrectedMomentsHyperparams` (torch's float64
        :math:`1-\\beta_1^t`).
    """

    b1: float | jax.Array
    b2: float | jax.Array
    eps: float | jax.Array
    eps_in_max: float | jax.Array = True
    exact_scalars: float | jax.Array = False
    one_minus_b1: float | jax.Array | None = None


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
      exact_scalars: 1.0 for torch's float64 bias corrections and :math:`\\rho_t`
        (`rectification_rho`), 0.0 for optax's float32 arithmetic.
      one_minus_b1, one_minus_b2: as in `BiasCorrectedMomentsHyperparams`.
    """

    b1: float | jax.Array
    b2: float | jax.Array
    eps: float | jax.Array
    eps_root: float | jax.Array
    threshold: float | jax.Array
    eps_hat: float | jax.Array = False
    strict_threshold: float | jax.Array = False
    rho_inf: float | jax.Array | None = None
    exact_scalars: float | jax.Array = False
    one_minus_b1: float | jax.Array | None = None
    one_minus_b2: float | jax.Array | None = None


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


def _first_moment_direction(
    b1: float | jax.Array,
    nesterov: bool,
    debias: float | jax.Array = True,
    momentum_decay: float | jax.Array | None = None,
    exact: float | jax.Array = False,
    one_minus_b1: float | jax.Array | None = None,
):
    r"""The direction of the Adam family: :math:`m_t`, or NAdam's look-ahead.

    NAdam (Dozat 2016; torch, keras) uses
    :math:`\frac{\mu_{t+1} m_t}{1-\Pi_{t+1}} + \frac{(1-\mu_t) g_t}{1-\Pi_t}` with
    :math:`\mu_t = \beta_1(1 - \tfrac12 0.96^{t\psi})` and :math:`\Pi_t` their product
    (`momentum_product`); optax takes :math:`\mu_t = \beta_1`, :math:`\Pi_t = \beta_1^t`.
    With the scale holding :math:`1/(1-\Pi_t)`, the direction is
    :math:`\mu_{t+1} \frac{1-\Pi_t}{1-\Pi_{t+1}} m_t + (1-\mu_t) g_t`.
    """
    if one_minus_b1 is None:
        one_minus_b1 = 1 - b1

    def direction(g, stats, t):
        mu = stats[0]
        if not nesterov:
            return mu
        next_t = optax.safe_increment(t)

        def correction(step):
            return _first_moment_correction(b1, momentum_decay, step, exact, one_minus_b1)

        ratio = correction(t) * (1 / correction(next_t))
        mu_next = b1 * (1 - _momentum_schedule_term(momentum_decay, next_t))
        # 1 - mu_t, written so that it is exactly (1 - b1) for a constant momentum.
        one_minus_mu = one_minus_b1 + b1 * _momentum_schedule_term(momentum_decay, t)
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

    def nu_correction(t):
        inverse = lambda: 1 / _correction(b2, h.one_minus_b2, h.exact_scalars, t)  # noqa: E731
        return _select(h.bias_correction_nu, inverse, lambda: 1.0)

    def accumulate(g, stats, t):
        mu, nu = ema(stats[0], g, b1), ema(stats[1], abs_sq(g), b2)
        if not amsgrad:
            return mu, nu
        corrected = nu * jnp.where(h.amsgrad_raw_max, 1.0, nu_correction(t))
        return mu, nu, jnp.maximum(stats[2], corrected)

    def scale(stats, t):
        correction = nu_correction(t)
        if amsgrad:
            v = stats[2] * jnp.where(h.amsgrad_raw_max, correction, 1.0)
        else:
            v = stats[1] * correction
        # eps-hat: eps added to sqrt(v_t) before the correction is eps / sqrt(1 - b2^t) after it.
        eps_t = eps * jnp.where(h.eps_hat, jnp.sqrt(correction), 1.0)
        mu_correction = _first_moment_correction(
            b1, h.momentum_decay, t, h.exact_scalars, h.one_minus_b1
        )
        return jnp.where(h.bias_correction_mu, 1 / mu_correction, 1.0) / (
            jnp.sqrt(v + eps_root) + eps_t
        )

    direction = _first_moment_direction(
        b1, nesterov, h.bias_correction_mu, h.momentum_decay, h.exact_scalars, h.one_minus_b1
    )
    return Rule(
        initial=(0.0, 0.0, 0.0) if amsgrad else (0.0, 0.0),
        accumulate=accumulate,
        direction=direction,
        scale=scale,
    )


def _check_moment_args(b1, b2, eps, eps_root=0.0):
    """The arguments as the arithmetic will use them (traced ones guarded, see `_validate`)."""
    return (
        _validate.check_unit_interval("b1", b1),
        _validate.check_unit_interval("b2", b2),
        _validate.check_non_negative("eps", eps),
        _validate.check_non_negative("eps_root", eps_root),
    )


def scale_by_bias_corrected_moments(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
    nesterov: bool = False,
    amsgrad: bool = False,
    *,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    eps_hat: bool = False,
    amsgrad_raw_max: bool = False,
    momentum_decay: float | None = None,
    exact_scalars: bool = False,
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
    Kingma & Ba's "ε-hat" form that keras uses. The bias corrections are float32 scalars, from β
    rounded to float32 as optax computes them, or (``exact_scalars``) torch's float64 values
    rounded once.

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
      exact_scalars: compute :math:`1-\beta^t` as float64 gives it, from the exact
        :math:`1-\beta` (torch; `adaptive_tx.rule.exact_bias_correction`), rather than from β
        rounded to float32 (optax, keras): at β2 = 0.99999 the two differ by 1.4e-3 at t = 1.

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
    b1, b2, eps, eps_root = _check_moment_args(b1, b2, eps, eps_root)
    if momentum_decay is not None:
        momentum_decay = _validate.check_non_negative(
            "momentum_decay", momentum_decay, allow_inf=True
        )
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
        momentum_decay=momentum_decay,
        exact_scalars=exact_scalars,
        one_minus_b1=1 - b1,
        one_minus_b2=1 - b2,
    )
    rule = bias_corrected_moments_rule(hyperparams, nesterov, amsgrad)
    mu, nu = moment_storages(mu_dtype, nu_dtype)
    storages = (mu, nu, nu) if amsgrad else (mu, nu)
    # The state's copy is for reading (`per_coordinate_scale`): finite, a constant momentum as -1.
    constant = _constant_momentum(momentum_decay)
    stored = hyperparams._replace(momentum_decay=-1.0 if constant else momentum_decay)
    return dense_transformation(rule, ScaleByBiasCorrectedMomentsState, storages, stored)


def inf_norm_moments_rule(hyperparams: InfNormMomentsHyperparams) -> Rule:
    r"""The Adamax rule for one coordinate (see `scale_by_inf_norm_moments`).

    Example:
      >>> rule = inf_norm_moments_rule(InfNormMomentsHyperparams(0.9, 0.999, 0.0))
      >>> rule.accumulate(jnp.array([-2.0]), (jnp.zeros(1), jnp.ones(1)), jnp.int32(1))
      (Array([-0.2], dtype=float32), Array([2.], dtype=float32))
    """
    b1, b2, eps, eps_in_max, exact, one_minus_b1 = hyperparams
    eps_max, eps_denominator = jnp.where(eps_in_max, eps, 0.0), jnp.where(eps_in_max, 0.0, eps)

    def accumulate(g, stats, t):
        mu, nu = stats
        return ema(mu, g, b1), jnp.maximum(b2 * nu, jnp.abs(g) + eps_max)

    return Rule(
        initial=(0.0, 0.0),
        accumulate=accumulate,
        direction=_first_moment_direction(b1, nesterov=False),
        scale=lambda stats, t: (
            1 / _correction(b1, one_minus_b1, exact, t) / (stats[1] + eps_denominator)
        ),
    )


def scale_by_inf_norm_moments(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
    *,
    eps_in_max: bool = True,
    exact_scalars: bool = False,
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
      exact_scalars: torch's float64 :math:`1-\beta_1^t` rather than optax's float32 one (see
        `scale_by_bias_corrected_moments`).

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
    b1, b2, eps, _ = _check_moment_args(b1, b2, eps)
    hyperparams = InfNormMomentsHyperparams(b1, b2, eps, eps_in_max, exact_scalars, 1 - b1)
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
    h = hyperparams
    b1, b2, threshold = h.b1, h.b2, h.threshold
    adam_hyperparams = BiasCorrectedMomentsHyperparams(
        b1,
        b2,
        h.eps,
        h.eps_root,
        eps_hat=h.eps_hat,
        exact_scalars=h.exact_scalars,
        one_minus_b1=h.one_minus_b1,
        one_minus_b2=h.one_minus_b2,
    )
    adam = bias_corrected_moments_rule(adam_hyperparams, nesterov, amsgrad=False)
    rho_inf = 2 / (1 - b2) - 1 if h.rho_inf is None else h.rho_inf
    one_minus_b2 = 1 - b2 if h.one_minus_b2 is None else h.one_minus_b2

    def optax_rho(t):
        # optax's arithmetic, in its order: b2^t from b2 rounded to float32.
        b2t = jnp.asarray(b2, jnp.result_type(float)) ** t
        return rho_inf - 2 * t * b2t / (1 - b2t)

    def scale(stats, t):
        rho = _select(h.exact_scalars, lambda: rectification_rho(one_minus_b2, t), lambda: optax_rho(t))
        rectify = jnp.where(h.strict_threshold, rho > threshold, rho >= threshold)
        # r_t is real where rho_t >= 4 (rectified for a threshold >= 4); the max keeps the branch
        # not taken (rho_t < 4) from computing the root of a negative number.
        ratio = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
        r = jnp.sqrt(jnp.maximum(ratio, 0))
        first = _first_moment_correction(b1, None, t, h.exact_scalars, h.one_minus_b1)
        return jnp.where(rectify, r * adam.scale(stats, t), 1 / first)

    return adam._replace(scale=scale)


def scale_by_rectified_moments(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    nesterov: bool = False,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
    *,
    eps_hat: bool = False,
    strict_threshold: bool = False,
    exact_scalars: bool = False,
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
      exact_scalars: torch's float64 bias corrections and :math:`\rho_t`
        (`rectification_rho`) rather than optax's float32 arithmetic, whose :math:`\rho_t`
        loses every digit to cancellation at β2 >= 0.9999 (see ``docs/conventions.md``).

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
    b1, b2, eps, eps_root = _check_moment_args(b1, b2, eps, eps_root)
    threshold = _validate.check_rectification_threshold(threshold, b2)
    hyperparams = RectifiedMomentsHyperparams(
        b1,
        b2,
        eps,
        eps_root,
        threshold,
        eps_hat,
        strict_threshold,
        rho_inf=2 / (1 - b2) - 1,
        exact_scalars=exact_scalars,
        one_minus_b1=1 - b1,
        one_minus_b2=1 - b2,
    )
    rule = rectified_moments_rule(hyperparams, nesterov)
    storages = moment_storages(mu_dtype, nu_dtype)
    return dense_transformation(rule, ScaleByRectifiedMomentsState, storages, hyperparams)
