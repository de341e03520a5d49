r"""SM3: an Adagrad-like accumulator kept as one maximum per index of each axis (a cover set).

SM3 (Anil, Gupta, Koren & Singer 2019) keeps, for a leaf of shape :math:`(n_1, \dots, n_k)`, one
vector per axis, :math:`\mu^{(i)} \in \mathbb{R}^{n_i}`: :math:`n_1 + \dots + n_k` numbers instead
of :math:`n_1 \cdots n_k`. It is a *storage* of the accumulator (`CoverSet`, see
`adaptive_tx.state_precision`), not a new rule: the rule (`sm3_rule`) computes with the accumulator
as decoded,

.. math::

   \hat v_j = \min_i \mu^{(i)}_{j_i}, \qquad
   v_t = c\, g_t^2 + \beta_2 \hat v_{t-1}, \quad c = 1 - \beta_2 \ (1 \text{ if } \beta_2 = 1),

and the new :math:`v_t` is projected back onto the cover set,
:math:`\mu^{(i)}_r = \max_{j : j_i = r} v_{t,j}` (the maximum over the other axes). A vector (or a
scalar) is its own cover: kept whole. The step reads the new :math:`v_t` (not its projection), as
``optax.scale_by_sm3`` does.

A row of a matrix shares the maxima of the other axes with every other row, so a row-sparse
gradient on a leaf of rank >= 2 is refused (`CoverSet.row_conflict`), with the fix; a vector's rows
are its own.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from adaptive_tx import _validate
from adaptive_tx.rule import Rule, abs_sq, dense_transformation, ema, state_scale
from adaptive_tx.state_precision import compute_dtype, full_like, keep_layout, placeholder


MAX_RANK = 4
"""The largest rank `CoverSet` keeps per axis (one container field per axis; conv kernels: 4)."""


def _expanded(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """`shape` with every axis but `axis` of size 1 (a per-axis vector, broadcastable)."""
    return tuple(size if i == axis else 1 for i, size in enumerate(shape))


class CoverArray(NamedTuple):
    r"""A non-negative statistic kept as its maxima along each axis (SM3's cover set).

    Field ``axis{i}`` holds :math:`\mu^{(i)}`, the maximum over every axis but :math:`i`, kept with
    size 1 along the others (shape ``(1, n_i, 1, ...)``, so that it shards like the parameter along
    axis :math:`i`); fields past the leaf's rank hold a (1,) placeholder. A leaf of rank 0 or 1 is
    kept whole in ``axis0``: `covered` tells the two apart.

    Example:
      >>> stored = CoverArray(jnp.array([[1.0], [4.0]]), jnp.array([[2.0, 3.0, 9.0]]),
      ...                     jnp.zeros(1), jnp.zeros(1))
      >>> stored.widen()  # the minimum of the row's and the column's maximum
      Array([[1., 1., 1.],
             [2., 3., 4.]], dtype=float32)
      >>> stored.vectors()  # optax.scale_by_sm3's layout: one vector per axis
      [Array([1., 4.], dtype=float32), Array([2., 3., 9.], dtype=float32)]
    """

    axis0: jax.Array
    axis1: jax.Array
    axis2: jax.Array
    axis3: jax.Array

    @property
    def covered(self) -> bool:
        """Whether the leaf is kept per axis (rank >= 2), not whole."""
        return jnp.ndim(self.axis1) >= 2

    def _used(self) -> list[jax.Array]:
        if not self.covered:
            return [self.axis0]
        return [m for m in self if jnp.ndim(m) == jnp.ndim(self.axis0)]

    @property
    def shape(self) -> tuple[int, ...]:
        return jnp.broadcast_shapes(*(jnp.shape(m) for m in self._used()))

    def widen(self) -> jax.Array:
        r"""The decoded statistic :math:`\min_i \mu^{(i)}`, broadcast to the leaf's shape."""
        wide = [m.astype(compute_dtype(m.dtype)) for m in self._used()]
        return jnp.broadcast_to(functools.reduce(jnp.minimum, wide), self.shape)

    def vectors(self) -> list[jax.Array]:
        """The per-axis maxima as vectors, as ``optax.scale_by_sm3`` keeps them (the whole
        statistic for a leaf of rank 0 or 1)."""
        if not self.covered:
            return [self.axis0]
        return [m.reshape(-1) for m in self._used()]


class CoverSet(NamedTuple):
    r"""Keep a non-negative statistic as one maximum per index of each axis (SM3).

    .. math::

       \mu^{(i)}_r = \max_{j : j_i = r} v_j, \qquad \hat v_j = \min_i \mu^{(i)}_{j_i} \ge v_j.

    The decoded :math:`\hat v` bounds :math:`v` from above (SM3's guarantee). Leaves of rank 0 or 1
    are kept whole; ranks above `MAX_RANK` are refused at ``init`` (``ValueError``). The maxima are
    kept in the parameter's real dtype.

    Reference: Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS 2019,
    https://arxiv.org/abs/1901.11150

    Example:
      >>> kept = CoverSet()
      >>> v = jnp.array([[1.0, 2.0], [3.0, 0.0]])
      >>> stored = kept.encode(v, kept.init(jnp.zeros((2, 2)), 0.0), None)
      >>> stored.vectors(), stored.widen()
      ([Array([2., 3.], dtype=float32), Array([3., 2.], dtype=float32)], Array([[2., 2.],
             [3., 2.]], dtype=float32))
    """

    reads_stored = False  # the step reads the new statistic, not its projection (optax)
    container = CoverArray
    row_fix = (
        "make this leaf's gradient dense (sparse.prepare_rows(lazy=False) first in the chain) or "
        "give it a per-coordinate method (adagrad) with optax.multi_transform"
    )

    def init(self, param: jax.Array, value: ArrayLike) -> CoverArray:
        dtype = jnp.finfo(jnp.result_type(param)).dtype  # real: complex64 -> float32
        shape = tuple(jnp.shape(param))
        if len(shape) > MAX_RANK:
            raise ValueError(
                f"CoverSet keeps at most {MAX_RANK} axes, got a parameter of shape {shape}; "
                "reshape it to at most 4 axes, or use another method for it (optax.multi_transform)"
            )
        if len(shape) < 2:
            kept = [full_like(param, value, dtype)]
        else:
            kept = [full_like(param, value, dtype, _expanded(shape, i)) for i in range(len(shape))]
        return CoverArray(*kept, *[placeholder(dtype)] * (MAX_RANK - len(kept)))

    def row_conflict(self, stored: CoverArray) -> str | None:
        """Why a leaf's rows cannot be updated alone: the other axes' maxima span its rows."""
        if not stored.covered:
            return None
        return "keeps maxima over the rows of this leaf along its other axes (SM3's cover set)"

    def encode(self, x: jax.Array, previous: CoverArray, key: jax.Array | None) -> CoverArray:
        del key
        if not previous.covered:
            whole = keep_layout(x.astype(previous.axis0.dtype), previous.axis0)
            return previous._replace(axis0=whole)
        kept = []
        for i, old in enumerate(previous):
            if i >= x.ndim:
                kept.append(old)
                continue
            others = tuple(a for a in range(x.ndim) if a != i)
            kept.append(keep_layout(jnp.max(x, axis=others, keepdims=True).astype(old.dtype), old))
        return CoverArray(*kept)


class Sm3Hyperparams(NamedTuple):
    """The numbers the SM3 rule is built from (kept in the state, packed in one array).

    Attributes:
      b1: the momentum's decay.
      b2: the accumulator's decay (1: a sum, SM3 as published).
      eps: added to the accumulator inside the inverse square root.
    """

    b1: float | jax.Array
    b2: float | jax.Array
    eps: float | jax.Array


class ScaleBySm3State(NamedTuple):
    """State of `scale_by_sm3` (optax's field names).

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      nu: params-shaped tree, the momentum of the preconditioned gradients.
      mu: a `CoverArray` of params-shaped trees: the per-axis maxima of the accumulator.
      packed_hyperparams: the `Sm3Hyperparams` values in one float array.

    Example:
      >>> tx = scale_by_sm3()
      >>> state = tx.init({'w': jnp.zeros((2, 3))})
      >>> state.mu.axis0['w'].shape, state.mu.axis1['w'].shape
      ((2, 1), (1, 3))
    """

    count: jax.Array
    nu: optax.Updates
    mu: CoverArray
    packed_hyperparams: jax.Array | None = None

    def per_coordinate_scale(self) -> optax.Updates:
        """The rule's scale, 1: the direction (the momentum ``nu``) holds the adaptivity."""
        return state_scale(sm3_rule(Sm3Hyperparams(*self.packed_hyperparams)), self)


def sm3_rule(hyperparams: Sm3Hyperparams) -> Rule:
    r"""The SM3 rule for one coordinate (see `scale_by_sm3`); statistics (momentum, accumulator).

    Example:
      >>> rule = sm3_rule(Sm3Hyperparams(0.0, 1.0, 0.0))
      >>> m, v = rule.accumulate(jnp.array([2.0, 0.0]), (jnp.zeros(2), jnp.zeros(2)), 1)
      >>> m, v  # g / sqrt(g**2) where the accumulator is positive, else 0
      (Array([1., 0.], dtype=float32), Array([4., 0.], dtype=float32))
    """
    b1, b2, eps = hyperparams
    coefficient = jnp.where(jnp.asarray(b2) == 1.0, 1.0, 1.0 - jnp.asarray(b2))

    def accumulate(g, stats, t):
        momentum, accumulator = stats
        accumulator = coefficient * abs_sq(g) + b2 * accumulator
        preconditioned = g * jnp.where(accumulator > 0, jax.lax.rsqrt(accumulator + eps), 0.0)
        return ema(momentum, preconditioned, b1), accumulator

    return Rule(
        initial=(0.0, 0.0),
        accumulate=accumulate,
        direction=lambda g, stats, t: stats[0],
        scale=lambda stats, t: jnp.ones_like(stats[0]),
    )


def scale_by_sm3(
    b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8
) -> optax.GradientTransformation:
    r"""Scale by SM3's accumulator, kept as per-axis maxima, then average (momentum).

    .. math::

       v_t = c\, g_t^2 + \beta_2 \min_i \mu^{(i)}_{t-1}, \quad
       m_t = \beta_1 m_{t-1} + (1-\beta_1)\, \frac{g_t}{\sqrt{v_t + \epsilon}}
       \ (0 \text{ where } v_t = 0), \quad
       \mu^{(i)}_t = \max_{\text{other axes}} v_t, \qquad u_t = m_t,

    with :math:`c = 1 - \beta_2` (1 when :math:`\beta_2 = 1`, the paper's sum). Equals
    ``optax.scale_by_sm3`` (same arguments). A matrix keeps :math:`m + n` accumulator entries
    (`CoverSet`); the momentum is kept whole. Row-sparse gradients are refused for leaves of rank
    >= 2 (a ``TypeError`` naming the leaf and the fix). Complex parameters (which optax refuses)
    use :math:`|g|^2` in the accumulator and keep a complex momentum.

    Reference: Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS 2019,
    https://arxiv.org/abs/1901.11150

    Args:
      b1: :math:`\beta_1` in [0, 1], the momentum's decay.
      b2: :math:`\beta_2` in [0, 1], the accumulator's decay.
      eps: :math:`\epsilon` >= 0, inside the root.

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleBySm3State`.

    Example:
      >>> tx = scale_by_sm3(b1=0.0)
      >>> updates, state = tx.update(jnp.array([[3.0, 0.0]]), tx.init(jnp.zeros((1, 2))))
      >>> updates  # g / |g| on the first step (0 where nothing was seen)
      Array([[1., 0.]], dtype=float32)
    """
    _validate.check_unit_interval("b1", b1)
    _validate.check_non_negative("b2", b2)
    if isinstance(b2, (int, float)) and b2 > 1:
        raise ValueError(
            f"b2 must be in [0, 1], got b2={b2!r} (the accumulator's decay; 1: a sum, as in SM3)"
        )
    _validate.check_non_negative("eps", eps)
    hyperparams = Sm3Hyperparams(b1, b2, eps)
    return dense_transformation(
        sm3_rule(hyperparams), ScaleBySm3State, (None, CoverSet()), hyperparams
    )
