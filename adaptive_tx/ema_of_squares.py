r"""The RMSProp family: scaling by an exponential moving average of squared gradients."""

from __future__ import annotations

from typing import NamedTuple

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
    inverse_root,
    state_scale,
)
from adaptive_tx.state_precision import StorageSpec, moment_storages


class EmaOfSquaresHyperparams(NamedTuple):
    """The numbers the RMSProp rule is built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      decay: :math:`\\rho`.
      initial_scale: :math:`\\nu_0`.
      eps_root: ε inside the square root.
      eps: ε outside the square root.
      debias: 1.0 to divide the averages by :math:`1-\\rho^t`, 0.0 not to.
      decay_power: 0.0 for the constant ``decay``; > 0 for Adafactor's schedule
        :math:`\\rho_t = 1 - (t - \\mathtt{decay\\_offset})^{-\\mathtt{decay\\_power}}`.
      decay_offset: the step the schedule starts from (fine-tuning).
      eps_grad_sq: ε added to every squared gradient (Adafactor's :math:`\\epsilon_1`).
    """

    decay: float | jax.Array
    initial_scale: float | jax.Array
    eps_root: float | jax.Array
    eps: float | jax.Array
    debias: float | jax.Array
    decay_power: float | jax.Array = 0.0
    decay_offset: float | jax.Array = 0.0
    eps_grad_sq: float | jax.Array = 0.0


class ScaleByEmaOfSquaresState(NamedTuple):
    """State of `scale_by_ema_of_squares`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      nu: params-shaped tree, the EMA of squared gradients :math:`\\nu_t`.
      mu: params-shaped tree, the EMA of gradients :math:`\\mu_t` (centered variant only, else None).
      packed_hyperparams: the `EmaOfSquaresHyperparams` values in one float array
        (not ``hyperparams``: ``optax.inject_hyperparams`` names its own field so).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_ema_of_squares(decay=0.75, eps=0.0)
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.nu, state.mu, state.per_coordinate_scale()  # 0.25 * 2², not centered, 1 / sqrt(1)
      (Array([1.], dtype=float32), None, Array([1.], dtype=float32))
    """

    count: jax.Array
    nu: optax.Updates
    mu: optax.Updates | None = None
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`1/(\sqrt{\hat\nu_t + \epsilon_{root}} + \epsilon)` at the last step."""
        rule = ema_of_squares_rule(
            EmaOfSquaresHyperparams(*self.packed_hyperparams), centered=self.mu is not None
        )
        return state_scale(rule, self)


def ema_of_squares_rule(hyperparams: EmaOfSquaresHyperparams, centered: bool) -> Rule:
    r"""The RMSProp rule for one coordinate (see `scale_by_ema_of_squares`).

    Example:
      >>> rule = ema_of_squares_rule(EmaOfSquaresHyperparams(0.9, 0.0, 0.0, 0.0, False), False)
      >>> rule.scale((jnp.array([0.25]),), jnp.int32(1))
      Array([2.], dtype=float32)
    """
    decay, eps_root, eps = hyperparams.decay, hyperparams.eps_root, hyperparams.eps
    power, offset = hyperparams.decay_power, hyperparams.decay_offset

    def scheduled_rate(t):
        steps = (t - jnp.asarray(offset, jnp.float32)).astype(jnp.float32)
        return 1 - steps ** -jnp.asarray(power, jnp.float32)

    def rate(t):
        # A constant decay is used as given (a Python float stays float64 until `ema` has
        # computed 1 - decay, as optax, torch and keras compute it); only a stored schedule
        # flag (an array) selects with jnp.where.
        if isinstance(power, (int, float)):
            return scheduled_rate(t) if power > 0 else decay
        return jnp.where(power > 0, scheduled_rate(t), decay)

    def accumulate(g, stats, t):
        rate_t = rate(t)
        g2 = abs_sq(g) + hyperparams.eps_grad_sq
        if centered:
            nu, mu = stats
            return ema(nu, g2, rate_t), ema(mu, g, rate_t)
        (nu,) = stats
        return (ema(nu, g2, rate_t),)

    def scale(stats, t):
        # Divide (not multiply by the inverse) as optax does: with `centered` the variance is a
        # difference of nearly equal numbers and rounding differences would show.
        correction = jnp.where(hyperparams.debias, bias_correction(decay, t), 1.0)
        variance = stats[0] / correction
        if centered:
            # A variance is >= 0; rounding can leave E[g^2] - E[g]^2 an ulp below 0 where the
            # gradient has not varied (at the first step it is exactly g^2 - g^2), and its root
            # would be NaN.
            variance = jnp.maximum(variance - abs_sq(stats[1] / correction), 0)
        return inverse_root(variance, eps_root, eps)

    initial_scale = hyperparams.initial_scale
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
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by the inverse root of an EMA of squared gradients (RMSProp, centered RMSProp).

    .. math::

       \nu_t = \rho\,\nu_{t-1} + (1-\rho)\,g_t^2, \quad \nu_0 = \mathtt{initial\_scale}, \qquad
       u_t = \frac{g_t}{\sqrt{\hat\nu_t + \epsilon}} \;\text{ or }\;
             \frac{g_t}{\sqrt{\hat\nu_t} + \epsilon} \ (\mathtt{eps\_in\_sqrt=False}).

    Centered (Graves 2013) also keeps :math:`\mu_t = \rho\,\mu_{t-1} + (1-\rho)\,g_t` and replaces
    :math:`\hat\nu_t` by the variance :math:`\max(\hat\nu_t - \hat\mu_t^2, 0)` (the max only
    removes rounding: optax's NaN where float32 leaves the difference an ulp below 0, as at the
    first bias-corrected step, where it is :math:`g_1^2 - g_1^2`). With ``bias_correction`` the
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
      mu_dtype: storage of the centered variant's :math:`\mu_t`, see
        `scale_by_bias_corrected_moments`.
      nu_dtype: storage of :math:`\nu_t`: None (the parameters' dtype), a float dtype,
        ``"bfloat16_sr"``, ``"int8_blockwise"``, `adaptive_tx.Factored`, `adaptive_tx.BlockMean`
        or a storage object (`adaptive_tx.state_precision`).

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
    decay = _validate.check_unit_interval("decay", decay)
    eps = _validate.check_non_negative("eps", eps)
    initial_scale = _validate.check_non_negative("initial_scale", initial_scale)
    hyperparams = EmaOfSquaresHyperparams(
        decay=decay,
        initial_scale=initial_scale,
        eps_root=eps if eps_in_sqrt else 0.0,
        eps=0.0 if eps_in_sqrt else eps,
        debias=bias_correction,
    )
    rule = ema_of_squares_rule(hyperparams, centered)
    mu, nu = moment_storages(mu_dtype, nu_dtype)
    storages = (nu, mu) if centered else (nu,)
    return dense_transformation(rule, ScaleByEmaOfSquaresState, storages, hyperparams)
