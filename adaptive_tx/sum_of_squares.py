r"""The Adagrad family: scaling by the running sum of squared gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate, sparse
from adaptive_tx.rule import Rule, abs_sq, dense_transformation, inverse_root, state_scale
from adaptive_tx.state_precision import StorageSpec, storage


class SumOfSquaresHyperparams(NamedTuple):
    """The numbers the Adagrad rule is built from (kept in the state, packed in one array by `rule.store_hyperparams`).

    Attributes:
      initial_accumulator_value: :math:`G_0`.
      eps_root: ε inside the square root.
      eps: ε outside the square root.
    """

    initial_accumulator_value: float | jax.Array
    eps_root: float | jax.Array
    eps: float | jax.Array


class ScaleBySumOfSquaresState(NamedTuple):
    """State of `scale_by_sum_of_squares`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      sum_of_squares: params-shaped tree, :math:`G_t` (stored as ``nu_dtype`` says).
      packed_hyperparams: the `SumOfSquaresHyperparams` values in one float array
        (not ``hyperparams``: ``optax.inject_hyperparams`` names its own field so).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_sum_of_squares(initial_accumulator_value=0.0, eps=0.0)
      >>> _, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
      >>> state.sum_of_squares, state.per_coordinate_scale()
      (Array([ 9., 16.], dtype=float32), Array([0.33333, 0.25   ], dtype=float32))
    """

    count: jax.Array
    sum_of_squares: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale :math:`1/(\sqrt{G_t + \epsilon_{root}} + \epsilon)` at the last step."""
        rule = sum_of_squares_rule(SumOfSquaresHyperparams(*self.packed_hyperparams))
        return state_scale(rule, self)


def _hyperparams(initial_accumulator_value, eps, eps_in_sqrt) -> SumOfSquaresHyperparams:
    """ε inside the root is ``eps_root``, outside it ``eps``."""
    eps_root, eps_outside = (eps, 0.0) if eps_in_sqrt else (0.0, eps)
    return SumOfSquaresHyperparams(initial_accumulator_value, eps_root, eps_outside)


def sum_of_squares_rule(
    hyperparams: SumOfSquaresHyperparams,
    reduce: Callable[[jax.Array], jax.Array] | None = None,
) -> Rule:
    r"""The Adagrad rule for one coordinate (see `scale_by_sum_of_squares`).

    With `reduce` the accumulator adds ``reduce(g**2)`` instead of ``g**2``: `sparse.row_mean`
    gives row-wise Adagrad (see `scale_by_rowwise_sum_of_squares`).

    Example:
      >>> rule = sum_of_squares_rule(SumOfSquaresHyperparams(0.0, 0.0, 0.0))
      >>> rule.scale((jnp.array([4.0, 0.0]),), jnp.int32(1))
      Array([0.5, 0. ], dtype=float32)
    """
    eps_root, eps = hyperparams.eps_root, hyperparams.eps

    def accumulate(g, stats, t):
        (total,) = stats
        squares = abs_sq(g)
        return (total + (squares if reduce is None else reduce(squares)),)

    def scale(stats, t):
        (total,) = stats
        return jnp.where(total > 0, inverse_root(total, eps_root, eps), 0.0)

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
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformation:
    r"""Scale by the inverse root of the sum of all past squared gradients (Adagrad).

    .. math::

       G_t = G_{t-1} + g_t^2, \quad G_0 = \mathtt{initial\_accumulator\_value}, \qquad
       u_t = \frac{g_t}{\sqrt{G_t + \epsilon}} \;\text{ or }\; \frac{g_t}{\sqrt{G_t} + \epsilon}
       \ (\mathtt{eps\_in\_sqrt=False}), \quad u_t = 0 \text{ where } G_t = 0.

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
    initial_accumulator_value = _validate.check_non_negative(
        "initial_accumulator_value", initial_accumulator_value
    )
    eps = _validate.check_non_negative("eps", eps)
    hyperparams = _hyperparams(initial_accumulator_value, eps, eps_in_sqrt)
    storages = (storage(nu_dtype, "nu_dtype", nonnegative=True),)
    rule = sum_of_squares_rule(hyperparams)
    return dense_transformation(rule, ScaleBySumOfSquaresState, storages, hyperparams)


class ScaleByRowwiseSumOfSquaresState(NamedTuple):
    """State of `scale_by_rowwise_sum_of_squares`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      sum_of_squares: one accumulator per row, :math:`G_{t,r}`: a leaf of shape (V, D) has one of
        shape (V, 1) (`sparse.row_shape`), in the parameters' dtype.
      packed_hyperparams: the `SumOfSquaresHyperparams` values in one float array
        (not ``hyperparams``: ``optax.inject_hyperparams`` names its own field so).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_rowwise_sum_of_squares(eps=0.0)
      >>> _, state = tx.update(jnp.array([[3.0, 1.0], [0.0, 0.0]]), tx.init(jnp.zeros((2, 2))))
      >>> state.sum_of_squares.ravel(), state.per_coordinate_scale().ravel()  # (9 + 1) / 2
      (Array([5., 0.], dtype=float32), Array([0.44721, 0.     ], dtype=float32))
    """

    count: jax.Array
    sum_of_squares: optax.Updates
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        r"""The rule's scale per row, shape (V, 1): it broadcasts against the (V, D) table."""
        return state_scale(
            sum_of_squares_rule(
                SumOfSquaresHyperparams(*self.packed_hyperparams), sparse.row_mean
            ),
            self,
        )


def scale_by_rowwise_sum_of_squares(
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-7,
    eps_in_sqrt: bool = True,
) -> optax.GradientTransformation:
    r"""Row-wise Adagrad: one accumulator per row, the running sum of the row's mean squared gradient.

    .. math::

       G_{t,r} = G_{t-1,r} + \frac{1}{D}\sum_{d} g_{t,r,d}^2, \qquad
       u_{t,r,d} = \frac{g_{t,r,d}}{\sqrt{G_{t,r} + \epsilon}} \;(0 \text{ where } G_{t,r} = 0).

    The Adagrad rule (`sum_of_squares_rule`) with the squares averaged over each row (the trailing
    axes of a leaf; a 1-d leaf has one accumulator per entry): the state of a V×D table is V
    numbers instead of V×D, and every coordinate of a row shares the row's step size. This is
    FBGEMM's ``rowwise_adagrad`` for embedding tables (with :math:`G_0 = 0` and
    ``eps_in_sqrt=False``: FBGEMM adds ε outside the root, :math:`\sqrt{G} + \epsilon`; by default
    it sits inside, as in this library's Adagrad, optax's convention).
    With `sparse.RowSparse` gradients only the touched rows are read and written, and the result
    is the dense one (up to the summation order of the row means).

    References: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 2011, https://jmlr.org/papers/v12/duchi11a.html ; FBGEMM
    ``rowwise_adagrad`` (fbgemm_gpu/codegen/genscript/optimizers.py),
    https://github.com/pytorch/FBGEMM

    Args:
      initial_accumulator_value: :math:`G_0`, >= 0.
      eps: >= 0, added inside or outside the square root (``eps_in_sqrt``).
      eps_in_sqrt: whether ε is added inside the square root (optax) or outside (FBGEMM).

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByRowwiseSumOfSquaresState`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_rowwise_sum_of_squares(eps=0.0)
      >>> state = tx.init(jnp.zeros((2, 2)))
      >>> updates, state = tx.update(jnp.array([[3.0, 1.0], [0.0, 0.0]]), state)
      >>> state.sum_of_squares  # mean of g**2 per row
      Array([[5.],
             [0.]], dtype=float32)
      >>> updates.round(4)  # g / sqrt(5) on the first row
      Array([[1.3416, 0.4472],
             [0.    , 0.    ]], dtype=float32)
    """
    initial_accumulator_value = _validate.check_non_negative(
        "initial_accumulator_value", initial_accumulator_value
    )
    eps = _validate.check_non_negative("eps", eps)
    hyperparams = _hyperparams(initial_accumulator_value, eps, eps_in_sqrt)
    rule = sum_of_squares_rule(hyperparams, reduce=sparse.row_mean)
    return dense_transformation(
        rule,
        ScaleByRowwiseSumOfSquaresState,
        hyperparams=hyperparams,
        stat_shape=sparse.row_shape,
    )
