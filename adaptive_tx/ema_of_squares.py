r"""The RMSProp family: scaling by an exponential moving average of squared gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, abs_sq, bias_correction, dense_transformation, ema


class ScaleByEmaOfSquaresState(NamedTuple):
    """State of `scale_by_ema_of_squares`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      nu: params-shaped tree, the EMA of squared gradients :math:`\\nu_t`.
      mu: params-shaped tree, the EMA of gradients :math:`\\mu_t` (centered variant only, else None).
    """

    count: jax.Array
    nu: optax.Updates
    mu: optax.Updates | None = None


def ema_of_squares_rule(
    decay: float,
    eps: float,
    initial_scale: float,
    eps_in_sqrt: bool,
    centered: bool,
    debias: bool,
) -> Rule:
    r"""The RMSProp rule for one coordinate (see `scale_by_ema_of_squares`).

    Example:
      >>> rule = ema_of_squares_rule(0.9, 0.0, 0.0, True, False, False)
      >>> rule.scale((jnp.array([0.25]),), jnp.int32(1))
      Array([2.], dtype=float32)
    """

    def accumulate(g, stats, t):
        if centered:
            nu, mu = stats
            return ema(nu, abs_sq(g), decay), ema(mu, g, decay)
        (nu,) = stats
        return (ema(nu, abs_sq(g), decay),)

    def scale(stats, t):
        # Divide (not multiply by the inverse) as optax does: with `centered` the variance is a
        # difference of nearly equal numbers and rounding differences would show.
        correction = bias_correction(decay, t) if debias else 1.0
        variance = stats[0] / correction
        if centered:
            variance = variance - abs_sq(stats[1] / correction)
        if eps_in_sqrt:
            return jax.lax.rsqrt(variance + eps)
        return 1 / (jnp.sqrt(variance) + eps)

    return Rule(
        initial=(initial_scale, 0.0) if centered else (initial_scale,),
        accumulate=accumulate,
        direction=lambda g, stats, t: g,
        scale=scale,
    )


def scale_by_ema_of_squares(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    bias_correction: bool = False,
) -> optax.GradientTransformation:
    r"""Scale by the inverse root of an EMA of squared gradients (RMSProp, centered RMSProp).

    .. math::

       \nu_t = \rho\,\nu_{t-1} + (1-\rho)\,g_t^2, \quad \nu_0 = \text{initial\_scale}, \qquad
       u_t = \frac{g_t}{\sqrt{\hat\nu_t + \epsilon}} \;\text{ or }\;
             \frac{g_t}{\sqrt{\hat\nu_t} + \epsilon} \text{ (eps\_in\_sqrt=False)}.

    Centered (Graves 2013) also keeps :math:`\mu_t = \rho\,\mu_{t-1} + (1-\rho)\,g_t` and replaces
    :math:`\hat\nu_t` by the variance :math:`\hat\nu_t - \hat\mu_t^2`. With ``bias_correction`` the
    hats divide by :math:`1-\rho^t`; without, :math:`\hat\nu_t = \nu_t`. The memory window is about
    :math:`1/(1-\rho)` steps, so old large gradients stop suppressing the step (unlike Adagrad).

    References: Hinton, Srivastava & Swersky, "Neural Networks for Machine Learning", lecture 6e,
    2012, https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf ; Graves,
    "Generating Sequences With Recurrent Neural Networks", 2013, https://arxiv.org/abs/1308.0850

    Args:
      decay: :math:`\rho`, in [0, 1).
      eps: >= 0, added inside or outside the square root (``eps_in_sqrt``).
      initial_scale: :math:`\nu_0`, >= 0 (torch and optax: 0; TF1: 1).
      eps_in_sqrt: whether ε is added inside the square root (optax) or outside (torch, keras).
      centered: whether to divide by the estimated standard deviation instead of the RMS.
      bias_correction: whether to divide the averages by :math:`1-\rho^t`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByEmaOfSquaresState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_ema_of_squares(decay=0.75)
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([2.0, 0.0]), state)
      >>> updates  # 2 / sqrt(0.25 * 2**2 + 1e-8)
      Array([2., 0.], dtype=float32)
    """
    _validate.check_unit_interval("decay", decay)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("initial_scale", initial_scale)
    rule = ema_of_squares_rule(decay, eps, initial_scale, eps_in_sqrt, centered, bias_correction)
    return dense_transformation(rule, ScaleByEmaOfSquaresState)
