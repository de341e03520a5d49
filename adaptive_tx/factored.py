r"""Factored and blockwise second moments: a statistic kept in far fewer numbers than coordinates.

Both are *storages* of a rule's statistic (see `adaptive_tx.state_precision`), not new rules: the
rule (RMSProp's EMA of squares, Adam's second moment) runs unchanged on the statistic as decoded,
and the new statistic is projected back onto what the storage can hold. Because a mean is linear,
projecting after the EMA is the same as taking the EMA of the projected squares, which is exactly
what Adafactor and Adam-mini compute.

* `Factored` (Adafactor): for a matrix, the row means :math:`R` and column means :math:`C` of
  :math:`v`, decoded as the rank-1 estimate :math:`\hat v = R\,C / \mathrm{mean}(R)`;
  :math:`m + n` numbers instead of :math:`m n`.
* `BlockMean` (Adam-mini): one mean of :math:`v` per block (per row, per head, per leaf).

Both keep the reduced axes with size 1, so a stored statistic shards like its parameter along the
axes that survive.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike, DTypeLike

from adaptive_tx import _validate
from adaptive_tx.state_precision import compute_dtype, full_like, keep_layout, placeholder
from adaptive_tx.ema_of_squares import (
    EmaOfSquaresHyperparams,
    ScaleByEmaOfSquaresState,
    ema_of_squares_rule,
)
from adaptive_tx.rule import dense_transformation


def factored_dims(
    shape: tuple[int, ...], min_dim_size_to_factor: int, last_two_axes: bool = False
) -> tuple[int, int] | None:
    """The axes Adafactor reduces, (d0, d1), or None if the leaf is kept whole.

    By default the two largest axes, (second largest, largest), if the second largest has at
    least ``min_dim_size_to_factor`` entries: ``optax.scale_by_factored_rms``'s choice. With
    ``last_two_axes``, the last two axes, (-2, -1), if both have that many entries: keras' and
    torch's choice (a kernel ``(..., m, n)`` is a stack of factored ``m x n`` matrices).

    Example:
      >>> factored_dims((256, 512), 128), factored_dims((256, 64), 128), factored_dims((512,), 1)
      ((0, 1), None, None)
      >>> factored_dims((5, 2, 3), 1), factored_dims((5, 2, 3), 1, last_two_axes=True)
      ((2, 0), (1, 2))
    """
    if len(shape) < 2:
        return None
    if last_two_axes:
        dims = (len(shape) - 2, len(shape) - 1)
    else:
        order = np.argsort(shape)
        dims = (int(order[-2]), int(order[-1]))
    if min(shape[d] for d in dims) < max(min_dim_size_to_factor, 1):
        return None
    return dims


def _kept(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """`shape` with `axis` averaged away (kept with size 1)."""
    return shape[:axis] + (1,) + shape[axis + 1 :]


class FactoredArray(NamedTuple):
    r"""A non-negative statistic kept as its means along two axes d0, d1 (`factored_dims`).

    Attributes:
      row: the mean over d1 (the largest axis, or the last; kept with size 1).
      col: the mean over d0 (the second largest axis, or the second to last; kept with size 1).
        A leaf kept whole (a vector, a small matrix) holds the statistic itself in ``row`` and a
        (1,) placeholder in ``col`` (as optax's unused factors): `factored` tells them apart.

    Example:
      >>> v = jnp.array([[1.0, 2.0], [3.0, 6.0]])  # rank 1: the estimate is exact
      >>> stored = FactoredArray(v.mean(axis=1, keepdims=True), v.mean(axis=0, keepdims=True))
      >>> stored.widen()
      Array([[1., 2.],
             [3., 6.]], dtype=float32)
    """

    row: jax.Array
    col: jax.Array

    @property
    def factored(self) -> bool:
        """Whether the leaf is factored (row and column means, of the leaf's rank >= 2)."""
        return self.col.ndim >= 2

    @property
    def shape(self) -> tuple[int, ...]:
        if not self.factored:
            return self.row.shape
        return jnp.broadcast_shapes(self.row.shape, self.col.shape)

    def widen(self) -> jax.Array:
        r"""The rank-1 estimate :math:`\hat v = (R / \mathrm{mean}(R))\,C` (0 where R is 0)."""
        row = self.row.astype(compute_dtype(self.row.dtype))
        if not self.factored:
            return row
        col = self.col.astype(row.dtype)
        # `col` has size 1 along d0 (and along the parameter's size-1 axes, where averaging `row`
        # changes nothing): the mean of R per matrix of a stack.
        axes = tuple(axis for axis, size in enumerate(col.shape) if size == 1)
        mean = jnp.mean(row, axis=axes, keepdims=True)
        # R / mean(R) first, as optax and keras: R C underflows when both are ~eps1 = 1e-30 (a
        # matrix that has only seen zero gradients), and 0 / 0 would make its step NaN.
        return row / jnp.where(mean > 0, mean, 1.0) * col


class Factored(NamedTuple):
    r"""Keep a second moment factored, as Adafactor does: row and column means of each matrix.

    .. math::

       R = \mathrm{mean}_{d_1}(v), \quad C = \mathrm{mean}_{d_0}(v), \qquad
       \hat v = \frac{R\,C}{\mathrm{mean}_{d_0}(R)},

    with :math:`d_1` the largest axis and :math:`d_0` the second largest (optax), or the last and
    the second to last axes with ``last_two_axes`` (keras, torch; any leading axes index a stack of
    matrices, each factored on its own). A leaf whose two axes do not both reach
    ``min_dim_size_to_factor`` (vectors, small matrices) is kept whole. The step reads
    :math:`\hat v`. Only for non-negative statistics.

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    ICML 2018, https://arxiv.org/abs/1804.04235

    Attributes:
      min_dim_size_to_factor: factor only if the second largest axis has at least this size
        (``inf``: never).
      dtype: the dtype of the means (None: the parameter's dtype).
      last_two_axes: factor the last two axes instead of the two largest.

    Example:
      >>> import adaptive_tx as atx
      >>> stored = Factored(min_dim_size_to_factor=2).init(jnp.zeros((3, 4)), 1.0)
      >>> stored.row.shape, stored.col.shape, stored.widen().shape
      ((3, 1), (1, 4), (3, 4))
    """

    min_dim_size_to_factor: int = 128
    dtype: DTypeLike | None = None
    last_two_axes: bool = False
    reads_stored = True
    container = FactoredArray

    def init(self, param: jax.Array, value: ArrayLike) -> FactoredArray:
        # The means of a constant are that constant. A second moment is real: a complex parameter
        # keeps it in the real dtype of its precision (complex64 -> float32).
        dtype = jnp.finfo(param.dtype if self.dtype is None else self.dtype).dtype
        dims = factored_dims(param.shape, self.min_dim_size_to_factor, self.last_two_axes)
        if dims is None:
            return FactoredArray(full_like(param, value, dtype), placeholder(dtype))
        row, col = (_kept(param.shape, axis) for axis in reversed(dims))
        return FactoredArray(*(full_like(param, value, dtype, shape) for shape in (row, col)))

    def row_conflict(self, stored: FactoredArray) -> str | None:
        """Why a leaf's rows cannot be updated alone: a factored leaf's means span its rows."""
        if not stored.factored:
            return None
        return "keeps means shared by the rows of this factored leaf"

    def encode(self, x: jax.Array, previous: FactoredArray, key: jax.Array | None) -> FactoredArray:
        del key
        dtype = previous.row.dtype
        if not previous.factored:
            return FactoredArray(keep_layout(x.astype(dtype), previous.row), previous.col)
        dims = factored_dims(x.shape, self.min_dim_size_to_factor, self.last_two_axes)
        means = (jnp.mean(x, axis=axis, keepdims=True) for axis in reversed(dims))
        return FactoredArray(*(keep_layout(m.astype(dtype), p) for m, p in zip(means, previous)))


class BlockMean(NamedTuple):
    r"""Keep one mean of a statistic per block (Adam-mini's one second moment per block).

    .. math::

       \bar v_b = \mathrm{mean}_{i \in b}(v_i), \qquad \hat v_i = \bar v_{b(i)}.

    A block is one index of the axes not in ``axes``: ``axes=None`` makes each leaf one block,
    ``axes=(0,)`` one block per output unit of a ``(in, out)`` kernel (flax's layout),
    ``axes=(0, 2)`` one block per head of an ``(in, heads, head_dim)`` attention kernel. Axes a
    leaf does not have are ignored (a bias with ``axes=(0,)`` is one block). The step reads the
    block means.

    Reference: Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More", 2024,
    https://arxiv.org/abs/2406.16793

    Attributes:
      axes: the axes averaged over; None: all of them.

    Example:
      >>> stored = BlockMean(axes=(0,)).init(jnp.zeros((3, 4)), 0.0)
      >>> stored.shape, BlockMean(axes=(0,)).encode(jnp.ones((3, 4)), stored, None).shape
      ((1, 4), (1, 4))
    """

    axes: tuple[int, ...] | None = None
    reads_stored = True
    container = None

    def _axes(self, ndim: int) -> tuple[int, ...]:
        if self.axes is None:
            return tuple(range(ndim))
        return tuple(sorted({axis % ndim for axis in self.axes if -ndim <= axis < ndim}))

    def init(self, param: jax.Array, value: ArrayLike) -> jax.Array:
        shape = tuple(jnp.shape(param))
        for axis in self._axes(len(shape)):
            shape = _kept(shape, axis)
        return full_like(param, value, jnp.float32, shape)

    def row_conflict(self, stored: jax.Array) -> str | None:
        """Why a leaf's rows cannot be updated alone: a block spans its rows (axis 0 averaged)."""
        if stored.ndim == 0 or 0 not in self._axes(stored.ndim):
            return None
        return "keeps one mean over the rows (axis 0) of each block of this leaf"

    def encode(self, x: jax.Array, previous: jax.Array, key: jax.Array | None) -> jax.Array:
        del key
        mean = jnp.mean(x, axis=self._axes(x.ndim), keepdims=True)
        return keep_layout(mean.astype(previous.dtype), previous)


def scale_by_factored_ema_of_squares(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    *,
    last_two_axes: bool = False,
) -> optax.GradientTransformation:
    r"""Scale by a factored estimate of the root mean square of the gradients (Adafactor).

    RMSProp's rule with Adafactor's decay schedule, :math:`\epsilon_1` on the squared gradient and
    the second moment kept `Factored`:

    .. math::

       \rho_t = 1 - (t - \mathtt{step\_offset})^{-\mathtt{decay\_rate}}, \quad
       v_t = \rho_t\, \hat v_{t-1} + (1-\rho_t)(g_t^2 + \epsilon_1), \qquad
       u_t = g_t / \sqrt{\hat v_t},

    with :math:`\hat v` the factored estimate :math:`R\,C/\mathrm{mean}(R)` of each matrix whose two
    largest axes (or last two, ``last_two_axes``) have at least ``min_dim_size_to_factor`` entries
    (other leaves keep :math:`v` whole). :math:`\rho_1 = 0`, so no bias correction is needed. With
    the defaults, equals ``optax.scale_by_factored_rms`` (same argument names); keras factors the
    last two axes of every matrix (``last_two_axes=True, min_dim_size_to_factor=0``). The state is a
    `ScaleByEmaOfSquaresState` whose ``nu`` holds `FactoredArray` leaves.

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    ICML 2018, https://arxiv.org/abs/1804.04235

    Args:
      factored: factor the matrices (False: keep every :math:`v` whole).
      decay_rate: the exponent of the decay schedule, >= 0 (0.8 in the paper; 0: :math:`\rho_t = 0`,
        no memory, as optax's formula gives).
      step_offset: the step the schedule starts from (for fine-tuning), >= 0.
      min_dim_size_to_factor: factor only if both factored axes have at least this size.
      epsilon: :math:`\epsilon_1`, added to every squared gradient, >= 0.
      last_two_axes: factor the last two axes instead of the two largest (see `Factored`).

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByEmaOfSquaresState`.

    Example:
      >>> tx = scale_by_factored_ema_of_squares(min_dim_size_to_factor=2)
      >>> state = tx.init(jnp.zeros((2, 3)))
      >>> updates, state = tx.update(jnp.array([[1.0, 2.0, 2.0], [2.0, 4.0, 4.0]]), state)
      >>> updates  # a rank-1 gradient is normalised exactly: u = g / |g|
      Array([[1., 1., 1.],
             [1., 1., 1.]], dtype=float32)
      >>> state.nu.row.shape, state.nu.col.shape
      ((2, 1), (1, 3))
    """
    _validate.check_non_negative("decay_rate", decay_rate)
    _validate.check_non_negative("step_offset", step_offset)
    _validate.check_non_negative("min_dim_size_to_factor", min_dim_size_to_factor)
    _validate.check_non_negative("epsilon", epsilon)
    hyperparams = EmaOfSquaresHyperparams(
        decay=0.0,
        initial_scale=0.0,
        eps_root=0.0,
        eps=0.0,
        debias=False,
        decay_power=decay_rate,
        decay_offset=step_offset,
        eps_grad_sq=epsilon,
    )
    storage = Factored(
        min_dim_size_to_factor if factored else float("inf"), last_two_axes=last_two_axes
    )
    rule = ema_of_squares_rule(hyperparams, centered=False)
    return dense_transformation(rule, ScaleByEmaOfSquaresState, (storage,), hyperparams)
