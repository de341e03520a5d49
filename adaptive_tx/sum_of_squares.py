r"""The Adagrad family: scaling by the running sum of squared gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, abs_sq, dense_transformation, state_scale
from adaptive_tx.state_precision import storage


class SumOfSquaresHyperparams(NamedTuple):
    """The numbers the Adagrad rule is built from (kept in the state as 0-d arrays).

    Attributes:
      initial_accumulator_value: :math:`G_0`.
      eps_root: ε inside the square root.
      eps: ε outside the square root.
    """

    initial_accumulator_value: Any
    eps_root: Any
    eps: Any


class ScaleBySumOfSquaresState(NamedTuple):
    """State of `scale_by_sum_of_squares`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      sum_of_squares: params-shaped tree, :math:`G_t` (stored as ``nu_dtype`` says).
      hyperparams: `SumOfSquaresHyperparams`, 0-d arrays.
    """

    count: jax.Array
    sum_of_squares: optax.Updates
    hyperparams: SumOfSquaresHyperparams | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`1/(\sqrt{G_t + \epsilon_{root}} + \epsilon)` at the last step."""
        return state_scale(sum_of_squares_rule(self.hyperparams), self)


def sum_of_squares_rule(hyperparams: SumOfSquaresHyperparams) -> Rule:
    r"""The Adagrad rule for one coordinate (see `scale_by_sum_of_squares`).

    Example:
      >>> rule = sum_of_squares_rule(SumOfSquaresHyperparams(0.0, 0.0, 0.0))
      >>> rule.scale((jnp.array([4.0, 0.0]),), jnp.int32(1))
      Array([0.5, 0. ], dtype=float32)
    """
    eps_root, eps = hyperparams.eps_root, hyperparams.eps

    def accumulate(g, stats, t):
        (total,) = stats
        return (total + abs_sq(g),)

    def scale(stats, t):
        (total,) = stats
        return jnp.where(total > 0, 1 / (jnp.sqrt(total + eps_root) + eps), 0.0)

    return Rule(
        initial=(hyperparams.initial_accumulator_value,),
        accumulate=accumulate,
        direction=lambda g, stats, t: g,
        scale=scale,
    )


def scale_by_sum_of_squares(
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    eps_in_sqrt: bool = True,
    nu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Scale by the inverse root of the sum of all past squared gradients (Adagrad).

    .. math::

       G_t = G_{t-1} + g_t^2, \quad G_0 = \text{initial\_accumulator\_value}, \qquad
       u_t = \frac{g_t}{\sqrt{G_t + \epsilon}} \;\text{ or }\; \frac{g_t}{\sqrt{G_t} + \epsilon}
       \text{ (eps\_in\_sqrt=False)}, \quad u_t = 0 \text{ where } G_t = 0.

    Coordinates that rarely see a gradient keep a large step; the step of every coordinate only
    shrinks (the "dying learning rate"). By default ε sits inside the square root, as in optax
    (``optax.scale_by_rss``); torch puts it outside (see ``docs/conventions.md``).

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011, https://jmlr.org/papers/v12/duchi11a.html

    Args:
      initial_accumulator_value: :math:`G_0`, >= 0.
      eps: >= 0, added inside or outside the square root (``eps_in_sqrt``).
      eps_in_sqrt: whether ε is added inside the square root (optax) or outside (torch).
      nu_dtype: storage of :math:`G_t`: None (the parameters' dtype), a float dtype,
        ``"bfloat16_sr"``, ``"int8_blockwise"`` or a storage object
        (`adaptive_tx.state_precision`; see `scale_by_bias_corrected_moments`).

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleBySumOfSquaresState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_sum_of_squares(initial_accumulator_value=0.0, eps=0.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([3.0, 0.0]), state)
      >>> updates.round(4), state.sum_of_squares
      (Array([1., 0.], dtype=float32), Array([9., 0.], dtype=float32))
    """
    _validate.check_non_negative("initial_accumulator_value", initial_accumulator_value)
    _validate.check_non_negative("eps", eps)
    hyperparams = SumOfSquaresHyperparams(
        initial_accumulator_value, eps if eps_in_sqrt else 0.0, 0.0 if eps_in_sqrt else eps
    )
    storages = (storage(nu_dtype, "nu_dtype", nonnegative=True),)
    rule = sum_of_squares_rule(hyperparams)
    return dense_transformation(rule, ScaleBySumOfSquaresState, storages, hyperparams)
