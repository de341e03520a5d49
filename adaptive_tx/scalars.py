r"""Scalars derived from hyperparameters, in the precision of the reference each rule follows.

A rule's arithmetic on arrays is float32; the scalars it derives from β (the bias corrections
:math:`1-\beta^t`, NAdam's momentum product, RAdam's :math:`\rho_t`) are where the frameworks
differ: optax and keras compute :math:`\beta^t` from β rounded to float32, torch in Python
float64. `exact_scalars` selects torch's values, computed without cancellation in float32
(`adaptive_tx.rule.exact_bias_correction`, `rectification_rho`). Each function takes the
constructor's numbers (Python floats, the update's exact values), injected arrays, or the state's
stored copy (arrays; a constant momentum stored as -1), and computes nothing non-finite on the way.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from adaptive_tx.rule import bias_correction, exact_bias_correction, log_decay


def _is_number(value: Any) -> bool:
    """A Python number (a constructor's argument), as opposed to an array (stored or injected)."""
    return isinstance(value, (bool, int, float))


def _select(flag: Any, if_true: Any, if_false: Any) -> Any:
    """``if_true()`` or ``if_false()``: only the chosen arithmetic for a Python flag (the
    constructor's), both under ``jnp.where`` for an array (a stored flag)."""
    if _is_number(flag):
        return if_true() if flag else if_false()
    return jnp.where(flag, if_true(), if_false())


def _correction(decay: Any, one_minus_decay: Any, exact: Any, t: jax.Array) -> jax.Array:
    """:math:`1-\\beta^t`: torch's float64 value (`exact_bias_correction`) or optax's float32 one."""
    if one_minus_decay is None:
        one_minus_decay = 1 - decay
    return _select(
        exact,
        lambda: exact_bias_correction(one_minus_decay, t),
        lambda: bias_correction(decay, t),
    )


_LOG_SERIES_TERMS = 64  # 2^-64: the series for the momentum product is exact in float64


def _constant_momentum(momentum_decay: Any) -> bool:
    """Whether ψ is None (or the Python ∞) of a constant momentum: the series below is then
    exactly 0, and skipping it keeps optax's arithmetic (and graph) for Adam and optax's NAdam."""
    if momentum_decay is None:
        return True
    return isinstance(momentum_decay, float) and math.isinf(momentum_decay)


def _scheduled(momentum_decay: Any, constant: Any, scheduled: Any) -> Any:
    """``constant()`` for a constant momentum, else ``scheduled(ψ)``; a stored ψ (an array, -1 for
    a constant momentum) selects with ``jnp.where``, the schedule seeing a ψ >= 0 either way."""
    if _constant_momentum(momentum_decay):
        return constant()
    if _is_number(momentum_decay):
        return scheduled(momentum_decay)
    psi = jnp.asarray(momentum_decay)
    return jnp.where(psi < 0, constant(), scheduled(jnp.maximum(psi, 0)))


def _momentum_schedule_term(momentum_decay: Any, t: jax.Array) -> Any:
    """:math:`\\tfrac12\\, 0.96^{t\\psi}` (0 for a constant momentum), so that μ_t = β1 (1 - term)."""
    dtype = jnp.result_type(float)

    def term(psi):
        return 0.5 * jnp.asarray(0.96, dtype) ** (jnp.asarray(t, dtype) * psi)

    if _constant_momentum(momentum_decay):
        return 0.0
    return _scheduled(momentum_decay, lambda: jnp.zeros([], dtype), term)


def momentum_product(
    b1: float | jax.Array, momentum_decay: float | jax.Array | None, t: jax.Array
) -> jax.Array:
    r"""NAdam's momentum product :math:`\Pi_t = \prod_{i=1}^t \mu_i`, in closed form.

    With Dozat's schedule :math:`\mu_i = \beta_1 (1 - \tfrac12 q^i)`, :math:`q = 0.96^\psi`
    (torch's ``momentum_decay`` ψ; keras 3 uses ψ = 1; ψ = None, or ∞, is optax's constant
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
      >>> momentum_product(0.9, None, jnp.int32(2))  # constant momentum: 0.9 ** 2
      Array(0.81, dtype=float32)
    """
    dtype = jnp.result_type(float)
    power = jnp.asarray(b1, dtype) ** t

    def scheduled(psi):
        k = jnp.arange(1, _LOG_SERIES_TERMS + 1, dtype=dtype)
        log_q = jnp.asarray(psi, dtype) * jnp.log(jnp.asarray(0.96, dtype))
        steps = jnp.asarray(t, dtype)
        # sum_{i=1}^t q^(i k), written with expm1 to keep its precision when q is close to 1
        # (and with no 0/0 computed where q = 1, even in the branch not taken).
        flat = log_q == 0
        denominator = jnp.where(flat, 1.0, jnp.expm1(k * log_q))
        geometric = jnp.where(
            flat, steps, jnp.exp(k * log_q) * jnp.expm1(k * steps * log_q) / denominator
        )
        return power * jnp.exp(-jnp.sum(0.5**k / k * geometric))

    return _scheduled(momentum_decay, lambda: power, scheduled)


def _first_moment_correction(
    b1: Any, momentum_decay: Any, t: jax.Array, exact: Any = False, one_minus_b1: Any = None
) -> jax.Array:
    """:math:`1 - \\Pi_t`: :math:`1-\\beta_1^t` (`_correction`), or NAdam's with a momentum schedule."""
    return _scheduled(
        momentum_decay,
        lambda: _correction(b1, one_minus_b1, exact, t),
        lambda psi: 1 - momentum_product(b1, psi, t),
    )


# 1 - x / expm1(x) = x/2 - x^2/12 + x^4/720 - ... (Bernoulli numbers), to x^10: 5e-10 at x = 1.
_H_SERIES = (1 / 2, -1 / 12, 1 / 720, -1 / 30240, 1 / 1209600, -1 / 47900160)


def _one_minus_x_over_expm1(x: jax.Array) -> jax.Array:
    """:math:`1 - x/(e^x - 1)` for x >= 0 without cancellation: a series below 1, direct above."""
    y = x * x
    even = _H_SERIES[-1]
    for coefficient in reversed(_H_SERIES[1:-1]):
        even = coefficient + y * even
    series = _H_SERIES[0] * x + y * even
    large = jnp.clip(x, 1.0, 80.0)  # past 80, x / expm1(x) is 0 in float32; no overflow either
    return jnp.where(x < 1, series, 1 - large / jnp.expm1(large))


def _log_ratio_minus_one(one_minus_b2: Any, log_b2: Any) -> Any:
    """:math:`c - 1 = -\\log(\\beta_2)/(1-\\beta_2) - 1` (= a/2 + a²/3 + …, a = 1 - β2)."""
    if _is_number(one_minus_b2):
        return -log_b2 / one_minus_b2 - 1  # float64: exact to ~1e-16 absolute
    a = jnp.asarray(one_minus_b2)
    series = sum(a**k / (k + 1) for k in range(1, 11))  # a^11/12 < 2e-9 for a < 0.2
    return jnp.where(a < 0.2, series, -log_b2 / jnp.where(a > 0, a, 1.0) - 1)


def rectification_rho(one_minus_b2: float | jax.Array, t: jax.Array) -> jax.Array:
    r"""RAdam's :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)` without cancellation.

    The formula subtracts two numbers of size :math:`2/(1-\beta_2)` to get one of size about
    :math:`t`: in float32 (optax) it keeps no digit at all for β2 = 0.99999 (:math:`\rho_1` comes
    out near 0 instead of 1). With :math:`a = 1-\beta_2`, :math:`L = -\log\beta_2 = a c` and
    :math:`x = tL`, it is exactly

    .. math::

       \rho_t + 1 = \frac{2}{L}\Big((c - 1) + \big(1 - \frac{x}{e^x - 1}\big)\Big),

    a sum of two non-negative terms: :math:`c - 1` is computed in float64 from the constructor's
    :math:`1-\beta_2` (or by its series from an injected one), :math:`1 - x/(e^x-1)` by its series
    below :math:`x = 1`. The result is torch's float64 :math:`\rho_t` to 2.4e-7 relative (measured
    for 1 - β2 from 1e-7 to 0.5 and t up to 1e6).

    Example:
      >>> rectification_rho(1e-5, jnp.int32(1)), rectification_rho(1e-5, jnp.int32(6))  # 1, 5.99994
      (Array(1.0000002, dtype=float32), Array(5.9999413, dtype=float32))
    """
    dtype = jnp.result_type(float)
    log_b2 = log_decay(one_minus_b2)
    c_minus_one = _log_ratio_minus_one(one_minus_b2, log_b2)
    x = jnp.asarray(t, dtype) * -jnp.asarray(log_b2, dtype)
    return (-2 / jnp.asarray(log_b2, dtype)) * (c_minus_one + _one_minus_x_over_expm1(x)) - 1
