r"""Follow the regularized leader: FTRL-Proximal, whose new parameter is a closed form of its state.

FTRL-Proximal (McMahan et al. 2013) keeps, per coordinate, the sum of squared gradients
:math:`n` and a linear term :math:`z`, and sets the parameter to the minimizer of the linearized
loss so far plus L1, L2 and proximal terms, in closed form. With an L1 strength :math:`\lambda_1`
the minimizer is *exactly* zero while :math:`|z| \le \lambda_1`: a rare feature keeps a zero weight
until its accumulated evidence exceeds :math:`\lambda_1`, which is why FTRL is the classic optimizer
of sparse-feature models (click-through prediction).

The rule reads the parameter (:math:`z` adds :math:`-\sigma\theta`) and gives the new parameter
(`adaptive_tx.rule.Rule` ``reads_params`` and ``gives_params``); the update is the new parameter
minus the old one, so a coordinate set to zero is exactly zero after ``optax.apply_updates``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, abs_sq, dense_transformation, state_scale
from adaptive_tx.state_precision import StorageSpec


class FtrlHyperparams(NamedTuple):
    r"""The numbers the FTRL rule is built from (kept in the state, packed in one array).

    Attributes:
      learning_rate: :math:`\alpha`.
      learning_rate_power: :math:`-p` (:math:`n^{p}` is used, ``-0.5``: :math:`\sqrt n`).
      initial_accumulator_value: :math:`n_0`.
      l1: :math:`\lambda_1`.
      l2: :math:`\lambda_2`.
      l2_shrinkage: :math:`\lambda_{2s}`, an L2 penalty applied to the gradient only.
      beta: :math:`\beta`.
    """

    learning_rate: float | jax.Array
    learning_rate_power: float | jax.Array
    initial_accumulator_value: float | jax.Array
    l1: float | jax.Array
    l2: float | jax.Array
    l2_shrinkage: float | jax.Array
    beta: float | jax.Array


class ScaleByFtrlState(NamedTuple):
    """State of `scale_by_ftrl`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      accumulator: params-shaped tree, :math:`n_t`, the sum of squared gradients (plus :math:`n_0`).
      linear: params-shaped tree, :math:`z_t`, the linear term.
      packed_hyperparams: the `FtrlHyperparams` values in one float array.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_ftrl(learning_rate=1.0, initial_accumulator_value=0.0)
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)), jnp.zeros(1))
      >>> state.accumulator, state.linear, state.per_coordinate_scale()  # 1 / sqrt(4)
      (Array([4.], dtype=float32), Array([2.], dtype=float32), Array([0.5], dtype=float32))
    """

    count: jax.Array
    accumulator: optax.Updates
    linear: optax.Updates
    packed_hyperparams: jax.Array | None = None

    # The scale is the whole rate (the learning rate is inside FTRL's closed form).
    includes_learning_rate = True

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rate :math:`\alpha / (n_t^{-p} + \beta + 2\lambda_2\alpha)` at the last step."""
        return state_scale(ftrl_rule(FtrlHyperparams(*self.packed_hyperparams)), self)


def ftrl_rule(hyperparams: FtrlHyperparams) -> Rule:
    r"""The FTRL-Proximal rule for one coordinate (see `scale_by_ftrl`).

    Example:
      >>> rule = ftrl_rule(FtrlHyperparams(1.0, -0.5, 0.0, 0.5, 0.0, 0.0, 0.0))
      >>> stats = rule.accumulate(jnp.array([2.0]), (jnp.zeros(1), jnp.zeros(1)), 1, jnp.zeros(1))
      >>> stats, rule.direction(None, stats, 1, None)  # z = 2; soft threshold 2 - 0.5
      ((Array([4.], dtype=float32), Array([2.], dtype=float32)), Array([1.5], dtype=float32))
    """
    lr, power = hyperparams.learning_rate, hyperparams.learning_rate_power
    l1, l2, beta = hyperparams.l1, hyperparams.l2, hyperparams.beta
    shrinkage = hyperparams.l2_shrinkage

    def accumulate(g, stats, t, p):
        n, z = stats
        new_n = n + abs_sq(g)
        sigma = (new_n ** (-power) - n ** (-power)) / lr
        return new_n, z + (g + 2 * shrinkage * p) - sigma * p

    def direction(g, stats, t, p):
        z = stats[1]
        return z - jnp.clip(z, -l1, l1)  # sign(z) max(|z| - l1, 0): 0 while |z| <= l1

    def scale(stats, t):
        quadratic = stats[0] ** (-power) / lr + 2 * (l2 + beta / (2.0 * lr))
        # 0 where nothing has been learned yet (n = 0 with no L2 and no beta): keras' 0/0 = NaN.
        return jnp.where(quadratic > 0, 1 / jnp.where(quadratic > 0, quadratic, 1), 0.0)

    return Rule(
        initial=(hyperparams.initial_accumulator_value, 0.0),
        accumulate=accumulate,
        direction=direction,
        scale=scale,
        reads_params=True,
        gives_params=True,
    )


def scale_by_ftrl(
    learning_rate: float = 0.001,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    l1_regularization_strength: float = 0.0,
    l2_regularization_strength: float = 0.0,
    l2_shrinkage_regularization_strength: float = 0.0,
    beta: float = 0.0,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""FTRL-Proximal: the parameter is the closed-form minimizer of the regularized linear loss.

    Per coordinate, with :math:`p` = ``learning_rate_power`` (:math:`-0.5`: square roots),

    .. math::

       n_t &= n_{t-1} + g_t^2, \qquad
       \sigma_t = \frac{n_t^{-p} - n_{t-1}^{-p}}{\alpha}, \qquad
       z_t = z_{t-1} + g_t + 2\lambda_{2s}\theta_{t-1} - \sigma_t \theta_{t-1}, \\
       \theta_t &= -\frac{z_t - \mathrm{clip}(z_t, -\lambda_1, \lambda_1)}
                        {n_t^{-p}/\alpha + 2\lambda_2 + \beta/\alpha}
       \quad (\text{exactly } 0 \text{ while } |z_t| \le \lambda_1),

    and the update is :math:`\theta_t - \theta_{t-1}`. As ``keras.optimizers.Ftrl`` computes it
    (the learning rate :math:`\alpha` is inside the closed form, so it is an argument here, not a
    later ``scale_by_learning_rate``). The rate :math:`\alpha / (n_t^{-p} + \beta +
    2\lambda_2\alpha)` is 0 where its denominator is (no gradient yet with :math:`n_0 = 0`, no L2,
    no β; keras divides 0 by 0 there).

    The starting parameters are not remembered: the first step of a coordinate with no gradient
    sets it to the closed form of :math:`z_0 = 0`, i.e. 0 (as keras does). A row-sparse leaf
    updates the looked-up rows only (lazy); untouched rows keep their parameters.

    Reference: McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013,
    https://research.google/pubs/ad-click-prediction-a-view-from-the-trenches/

    Args:
      learning_rate: :math:`\alpha`, a number > 0 (not a schedule: :math:`z` accumulates terms
        divided by it).
      learning_rate_power: :math:`p`, <= 0 (-0.5: Adagrad-like rates; 0: a constant rate).
      initial_accumulator_value: :math:`n_0`, >= 0.
      l1_regularization_strength: :math:`\lambda_1`, >= 0.
      l2_regularization_strength: :math:`\lambda_2`, >= 0.
      l2_shrinkage_regularization_strength: :math:`\lambda_{2s}`, >= 0, an L2 penalty added to
        the gradient in :math:`z` only (not in :math:`n`).
      beta: :math:`\beta`, >= 0.
      nu_dtype: storage of :math:`n` and :math:`z`: None (the parameters' dtype), a float dtype
        or a storage (`adaptive_tx.state_precision`). :math:`z` determines the weights
        themselves (above), so a storage's relative precision reaches the weights directly: with
        ``"int8_blockwise"`` a run ends ~7% of its distance travelled away from the float32 run
        (bfloat16 with stochastic rounding: within 5%), where the Adam family stays within 5%.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByFtrlState`; its ``update`` needs
      ``params``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = scale_by_ftrl(learning_rate=1.0, initial_accumulator_value=0.0,
      ...                    l1_regularization_strength=1.0)
      >>> params = jnp.array([0.5, 0.5])
      >>> updates, _ = tx.update(jnp.array([0.5, 3.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # z = g - sqrt(g²) θ: 0.25 -> 0; -(1.5 - 1) / 3
      Array([ 0.        , -0.16666669], dtype=float32)
    """
    if callable(learning_rate):
        raise TypeError(
            "scale_by_ftrl: learning_rate must be a number, got a schedule (FTRL's linear term "
            "accumulates steps divided by the rate, so its closed form needs one rate)"
        )
    hyperparams = FtrlHyperparams(
        learning_rate=_validate.check_positive("learning_rate", learning_rate),
        learning_rate_power=_validate.check_non_positive(
            "learning_rate_power", learning_rate_power
        ),
        initial_accumulator_value=_validate.check_non_negative(
            "initial_accumulator_value", initial_accumulator_value
        ),
        l1=_validate.check_non_negative("l1_regularization_strength", l1_regularization_strength),
        l2=_validate.check_non_negative("l2_regularization_strength", l2_regularization_strength),
        l2_shrinkage=_validate.check_non_negative(
            "l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength
        ),
        beta=_validate.check_non_negative("beta", beta),
    )
    return dense_transformation(
        ftrl_rule(hyperparams), ScaleByFtrlState, (nu_dtype, nu_dtype), hyperparams
    )
