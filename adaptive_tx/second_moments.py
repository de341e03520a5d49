r"""Adam with another second moment: AdaBelief and Yogi.

Both keep Adam's first moment, its bias corrections and its scale
:math:`(1-\beta_1^t)^{-1} / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)` (the rule of
`adaptive_tx.moments.scale_by_bias_corrected_moments`, reused, not rewritten) and change only how
the second statistic accumulates:

- AdaBelief: :math:`s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}`, the
  variance of the gradient around its prediction :math:`m_t` (the "belief"): where the gradient is
  what the momentum predicts, the step is large; where it surprises, small.
- Yogi: :math:`v_t = v_{t-1} - (1-\beta_2)\operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2`, an
  additive update whose change is bounded by :math:`(1-\beta_2) g_t^2`, so a burst of large
  gradients cannot inflate :math:`v_t` (and shrink the step) as fast as Adam's EMA does.

The effective learning rate is Adam's, with :math:`\hat v_t` the method's own second statistic.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.moments import BiasCorrectedMomentsHyperparams, bias_corrected_moments_rule
from adaptive_tx.rule import Rule, abs_sq, dense_transformation, ema, state_scale
from adaptive_tx.state_precision import StorageSpec, moment_storages


class SecondMomentHyperparams(NamedTuple):
    """The numbers the AdaBelief and Yogi rules are built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      b1, b2: :math:`\\beta_1, \\beta_2`.
      eps: ε outside the square root.
      eps_root: ε added to the second statistic (AdaBelief: to :math:`s_t` at every step, as
        optax; Yogi: inside the square root).
      initial_accumulator_value: the initial value of both moments (Yogi; 0 for AdaBelief).
    """

    b1: float | jax.Array
    b2: float | jax.Array
    eps: float | jax.Array
    eps_root: float | jax.Array
    initial_accumulator_value: float | jax.Array = 0.0


class ScaleByBeliefState(NamedTuple):
    """State of `scale_by_belief`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the first moment :math:`m_t` (``mu_dtype``).
      nu: params-shaped tree, :math:`s_t`, the EMA of :math:`(g_t - m_t)^2` plus
        :math:`\\epsilon_{root}` (``nu_dtype``).
      packed_hyperparams: the `SecondMomentHyperparams` values in one float array.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_belief(eps=0.0, eps_root=0.0)
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.mu, state.nu  # 0.1 g; 0.001 (g - 0.1 g)²
      (Array([0.2], dtype=float32), Array([0.00324], dtype=float32))
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`(1-\beta_1^t)^{-1} / (\sqrt{\hat s_t} + \epsilon)` at the last step."""
        hyperparams = SecondMomentHyperparams(*self.packed_hyperparams)
        return state_scale(belief_rule(hyperparams, nesterov=False), self)


class ScaleByYogiState(NamedTuple):
    """State of `scale_by_yogi`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the first moment :math:`m_t` (``mu_dtype``).
      nu: params-shaped tree, Yogi's second moment :math:`v_t` (``nu_dtype``).
      packed_hyperparams: the `SecondMomentHyperparams` values in one float array.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_yogi(initial_accumulator_value=0.0)
      >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> state.nu  # 0 - 0.001 * sign(0 - 4) * 4
      Array([0.004], dtype=float32)
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`(1-\beta_1^t)^{-1} / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)`."""
        return state_scale(yogi_rule(SecondMomentHyperparams(*self.packed_hyperparams)), self)


def _adam(hyperparams: SecondMomentHyperparams, eps_root, nesterov: bool) -> Rule:
    """Adam's rule (direction and scale) for these hyperparameters."""
    h = hyperparams
    adam_hyperparams = BiasCorrectedMomentsHyperparams(h.b1, h.b2, h.eps, eps_root)
    return bias_corrected_moments_rule(adam_hyperparams, nesterov, amsgrad=False)


def belief_rule(hyperparams: SecondMomentHyperparams, nesterov: bool) -> Rule:
    r"""The AdaBelief rule for one coordinate: Adam's, with :math:`s_t` for :math:`v_t` (see `scale_by_belief`).

    Example:
      >>> rule = belief_rule(SecondMomentHyperparams(0.9, 0.999, 0.0, 0.0), nesterov=False)
      >>> rule.accumulate(jnp.array([2.0]), (jnp.zeros(1), jnp.zeros(1)), jnp.int32(1))
      (Array([0.2], dtype=float32), Array([0.00324], dtype=float32))
    """
    b1, b2, eps_root = hyperparams.b1, hyperparams.b2, hyperparams.eps_root

    def accumulate(g, stats, t):
        mu = ema(stats[0], g, b1)
        return mu, ema(stats[1], abs_sq(g - mu), b2) + eps_root

    return _adam(hyperparams, 0.0, nesterov)._replace(accumulate=accumulate)


def yogi_rule(hyperparams: SecondMomentHyperparams) -> Rule:
    r"""The Yogi rule for one coordinate: Adam's, with Yogi's additive :math:`v_t` (see `scale_by_yogi`).

    Example:
      >>> rule = yogi_rule(SecondMomentHyperparams(0.9, 0.999, 1e-3, 0.0, 1e-6))
      >>> rule.accumulate(jnp.array([2.0]), (jnp.zeros(1), jnp.full(1, 5.0)), jnp.int32(1))[1]
      Array([4.996], dtype=float32)
    """
    b1, b2 = hyperparams.b1, hyperparams.b2
    initial = hyperparams.initial_accumulator_value

    def accumulate(g, stats, t):
        g2 = abs_sq(g)
        return ema(stats[0], g, b1), stats[1] - (1 - b2) * jnp.sign(stats[1] - g2) * g2

    adam = _adam(hyperparams, hyperparams.eps_root, nesterov=False)
    return adam._replace(initial=(initial, initial), accumulate=accumulate)


def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by the first moment over the root of the variance around it (AdaBelief).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       s_t = \beta_2 s_{t-1} + (1-\beta_2) (g_t - m_t)^2 + \epsilon_{root}, \qquad
       u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{s_t / (1-\beta_2^t)} + \epsilon}.

    :math:`\epsilon_{root}` is added to the statistic itself at every step (as optax and the
    paper's Algorithm 2), not only inside the root. ``nesterov`` uses NAdam's look-ahead first
    moment, as `scale_by_bias_corrected_moments`.

    Reference: Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
    Gradients", NeurIPS 2020, https://arxiv.org/abs/2010.07468

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: ε >= 0, outside the square root.
      eps_root: :math:`\epsilon_{root}` >= 0, added to :math:`s_t`.
      nesterov: use NAdam's look-ahead first moment.
      mu_dtype, nu_dtype: storage of :math:`m_t` and :math:`s_t`, see
        `scale_by_bias_corrected_moments`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByBeliefState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_belief()
      >>> updates, state = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first step: g / (0.9 |g|)
      Array([ 1.1111, -1.1111], dtype=float32)
    """
    hyperparams = SecondMomentHyperparams(*_check(b1, b2, eps, eps_root))
    storages = moment_storages(mu_dtype, nu_dtype)
    rule = belief_rule(hyperparams, nesterov)
    return dense_transformation(rule, ScaleByBeliefState, storages, hyperparams)


def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
    *,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by Adam's ratio with Yogi's additive second moment.

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       v_t = v_{t-1} - (1-\beta_2) \operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2, \qquad
       u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon},

    with :math:`m_0 = v_0` = ``initial_accumulator_value`` (optax's convention; the paper starts
    both at 0 too, up to this 1e-6). :math:`v_t` moves towards :math:`g_t^2` by at most
    :math:`(1-\beta_2) g_t^2` per step, and stays >= 0.

    Reference: Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018,
    https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization

    Args:
      b1: :math:`\beta_1`, in [0, 1).
      b2: :math:`\beta_2`, in [0, 1).
      eps: ε >= 0, outside the square root.
      eps_root: :math:`\epsilon_{root}` >= 0, inside the square root.
      initial_accumulator_value: >= 0, the initial value of both moments.
      mu_dtype, nu_dtype: storage of :math:`m_t` and :math:`v_t`, see
        `scale_by_bias_corrected_moments`.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByYogiState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_yogi(eps=0.0, initial_accumulator_value=0.0)
      >>> updates, state = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first step is the sign of the gradient, as Adam's
      Array([ 1., -1.], dtype=float32)
    """
    checked = _check(b1, b2, eps, eps_root)
    initial = _validate.check_non_negative("initial_accumulator_value", initial_accumulator_value)
    hyperparams = SecondMomentHyperparams(*checked, initial)
    storages = moment_storages(mu_dtype, nu_dtype)
    return dense_transformation(yogi_rule(hyperparams), ScaleByYogiState, storages, hyperparams)


def _check(b1, b2, eps, eps_root):
    return (
        _validate.check_unit_interval("b1", b1),
        _validate.check_unit_interval("b2", b2),
        _validate.check_non_negative("eps", eps),
        _validate.check_non_negative("eps_root", eps_root),
    )
