r"""Per-coordinate effective learning rates, read from an optimizer's state.

An adaptive method gives every coordinate its own step size. The *effective learning rate*
:math:`\eta_{\text{eff}}` of a coordinate is the factor such that the last update was

.. math::

   u_t = -\eta_{\text{eff}} \odot d_t,

where the direction :math:`d_t` is the current gradient :math:`g_t` for Adagrad and RMSProp and the
raw first moment :math:`m_t` for the Adam family. It is the learning rate times the rule's
per-coordinate scale (`adaptive_tx.rule.Rule.scale`), so it is computed by the same code that made
the update. With optax's conventions:

- Adagrad: :math:`\eta / \sqrt{G_t + \epsilon}` (0 where :math:`G_t = 0`);
- RMSProp: :math:`\eta / \sqrt{\nu_t + \epsilon}` (or :math:`\eta / (\sqrt{\nu_t} + \epsilon)`);
- Adam: :math:`\eta \,/\, (1-\beta_1^t) \,/\, (\sqrt{v_t/(1-\beta_2^t)} + \epsilon)`;
- AMSGrad: Adam's with the running maximum of :math:`\hat v`; Adamax:
  :math:`\eta / (1-\beta_1^t) / u_t`; RAdam: :math:`r_t` times Adam's once rectified, else
  :math:`\eta / (1-\beta_1^t)`; NAdam: Adam's (its direction is the look-ahead
  :math:`\beta_1 \frac{1-\beta_1^t}{1-\beta_1^{t+1}} m_t + (1-\beta_1) g_t`).

A scheduled learning rate contributes the rate of the last step. Decoupled weight decay and a
momentum trace after the learning rate (``rmsprop(momentum=...)``) are not part of the rate.

No peer library exposes this quantity; the seeds of this project make it the central diagnostic:
a rare coordinate keeps a large rate, and Adagrad's rates only ever shrink (the "dying learning
rate"), which `effective_learning_rate_summary` turns into an alarm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from adaptive_tx.learning_rate import LEARNING_RATE_STATES


class RateSummary(NamedTuple):
    """Statistics of the effective learning rates of one leaf (0-d float32 arrays).

    Attributes:
      min, median, max, mean: over the leaf's coordinates (NaN for an empty leaf).
      fraction_below: the fraction of coordinates whose rate is below the threshold.

    Example:
      >>> import jax.numpy as jnp, adaptive_tx as atx
      >>> tx = atx.adagrad(0.5, initial_accumulator_value=0.25, eps=0.0)
      >>> state = tx.init({'w': jnp.zeros(3)})
      >>> effective_learning_rate_summary(state)['w'].median  # 0.5 / sqrt(0.25)
      Array(1., dtype=float32)
    """

    min: jax.Array
    median: jax.Array
    max: jax.Array
    mean: jax.Array
    fraction_below: jax.Array


def _is_part(node: Any) -> bool:
    return isinstance(node, LEARNING_RATE_STATES) or hasattr(node, "per_coordinate_scale")


def _unwrap(opt_state: Any) -> Any:
    """A `flax.nnx.Optimizer`'s ``opt_state`` holds variables; the rates are computed on arrays."""
    return jax.tree.map(jnp.asarray, opt_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def effective_learning_rate(opt_state: optax.OptState) -> optax.Updates:
    r"""The per-coordinate effective learning rate of the last step, shaped like the parameters.

    .. math::

       \eta_{\text{eff}} = \eta_t \cdot \mathrm{scale}(s_t, t), \qquad u_t = -\eta_{\text{eff}} \odot d_t,

    with :math:`d_t = g_t` (Adagrad, RMSProp) or :math:`m_t` (Adam family); see the module
    docstring for each method's closed form. Before the first step it is the rate a first step
    from the initial statistics would use, at :math:`t = 1`. Jittable.

    The state must hold exactly one adaptive primitive of this library (any alias or compat
    preset, or a chain with one such primitive) and one `scale_by_learning_rate`. The state of a
    `flax.nnx.Optimizer` (``optimizer.opt_state``) is accepted as is.

    Reference: the per-coordinate step :math:`\eta/\sqrt{G_{t,ii}}` of Duchi, Hazan & Singer,
    "Adaptive Subgradient Methods for Online Learning and Stochastic Optimization", JMLR 2011,
    https://jmlr.org/papers/v12/duchi11a.html

    Args:
      opt_state: the optimizer's state.

    Returns:
      A tree shaped like the parameters, of float32 (or wider) arrays.

    Raises:
      ValueError: if the state holds no adaptive primitive or learning rate, or more than one.

    Example:
      >>> import jax.numpy as jnp, adaptive_tx as atx
      >>> tx = atx.adagrad(0.5, initial_accumulator_value=0.0, eps=0.0)
      >>> _, state = tx.update(jnp.array([2.0, 0.25]), tx.init(jnp.zeros(2)))
      >>> effective_learning_rate(state)  # 0.5 / |g|
      Array([0.25, 2.  ], dtype=float32)
    """
    parts = jax.tree.leaves(_unwrap(opt_state), is_leaf=_is_part)
    scales = [part for part in parts if hasattr(part, "per_coordinate_scale")]
    rates = [part for part in parts if isinstance(part, LEARNING_RATE_STATES)]
    if len(scales) != 1 or len(rates) != 1:
        raise ValueError(
            "effective_learning_rate needs a state with exactly one adaptive primitive and one "
            f"scale_by_learning_rate; found {len(scales)} adaptive states "
            f"({', '.join(type(s).__name__ for s in scales) or 'none'}) and {len(rates)} "
            "learning-rate states"
        )
    learning_rate = rates[0].rate
    return jax.tree.map(lambda s: learning_rate * s, scales[0].per_coordinate_scale())


def _summarize(rate: jax.Array, threshold: float, where: Any = True) -> RateSummary:
    rate = rate.astype(jnp.float32)
    if rate.size == 0:
        nan = jnp.full([], jnp.nan, jnp.float32)
        return RateSummary(nan, nan, nan, nan, nan)
    keep = jnp.broadcast_to(jnp.asarray(where, bool), rate.shape)
    kept = jnp.where(keep, rate, jnp.nan)  # an empty selection gives NaN, like an empty leaf
    return RateSummary(
        min=jnp.nanmin(kept),
        median=jnp.nanmedian(kept),
        max=jnp.nanmax(kept),
        mean=jnp.nanmean(kept),
        fraction_below=jnp.sum(keep & (rate < threshold)) / jnp.sum(keep, dtype=jnp.float32),
    )


def _masks(where: Mapping[str, Any] | None, shapes: dict[str, tuple]) -> dict:
    """`where` checked against the leaves' shapes (keyed by path): every key a leaf's path, every
    mask broadcastable to its leaf."""
    where = dict(where or {})
    unknown = sorted(set(where) - set(shapes))
    if unknown:
        raise ValueError(
            f"effective_learning_rate_summary: where has no leaf {unknown[0]!r}; the leaves are "
            + ", ".join(repr(p) for p in shapes)
        )
    for path, mask in where.items():
        mask_shape = jnp.shape(mask)
        try:
            jnp.broadcast_shapes(mask_shape, shapes[path])
        except ValueError:
            raise ValueError(
                f"effective_learning_rate_summary: where[{path!r}] has shape {mask_shape}, which "
                f"does not broadcast to the leaf's shape {shapes[path]}"
            ) from None
    return where


def effective_learning_rate_summary(
    opt_state: optax.OptState, threshold: float = 1e-6, where: Mapping[str, Any] | None = None
) -> dict[str, RateSummary]:
    r"""Per-leaf statistics of the effective learning rate, for training-loop logging (jittable).

    For every parameter leaf: min, median, max and mean of :math:`\eta_{\text{eff}}` over its
    coordinates, and the fraction of coordinates with :math:`\eta_{\text{eff}} <` ``threshold``:
    the "dying learning rate" alarm (Adagrad's rates only shrink; a layer whose fraction climbs to
    1 has stopped learning). ``where`` restricts a leaf's statistics to some of its coordinates:
    the rows of an embedding table that were looked up so far, say. A row that no gradient has
    reached has the rate of its initial statistics (:math:`\eta/\epsilon` for Adam, whose
    :math:`v` is 0), which would otherwise dominate the table's median.

    Args:
      opt_state: the optimizer's state (see `effective_learning_rate`).
      threshold: the rate below which a coordinate counts as dying.
      where: optional dict from a leaf's path to a boolean mask broadcastable to the leaf's shape
        (``{"embed/embedding": seen[:, None]}``); only the coordinates where it is True are
        summarized (all NaN if none). Leaves not named are summarized whole.

    Returns:
      A dict from the leaf's path (``"layer/kernel"``) to its `RateSummary`.

    Raises:
      ValueError: if ``where`` names a path that is not a leaf, or a mask that does not broadcast.

    Example:
      >>> import jax.numpy as jnp, adaptive_tx as atx
      >>> tx = atx.adagrad(0.5, initial_accumulator_value=0.0, eps=0.0)
      >>> params = {'w': jnp.zeros(3)}
      >>> _, state = tx.update({'w': jnp.array([1e6, 1.0, 4.0])}, tx.init(params))
      >>> summary = effective_learning_rate_summary(state, threshold=1e-3)['w']
      >>> summary.median, summary.max, summary.fraction_below
      (Array(0.125, dtype=float32), Array(0.5, dtype=float32), Array(0.33333334, dtype=float32))
      >>> seen = {'w': jnp.array([False, True, True])}
      >>> effective_learning_rate_summary(state, where=seen)['w'].median  # of 0.5 and 0.125
      Array(0.3125, dtype=float32)
    """
    rates = {
        jax.tree_util.keystr(path, simple=True, separator="/"): rate
        for path, rate in jax.tree_util.tree_leaves_with_path(effective_learning_rate(opt_state))
    }
    where = _masks(where, {path: rate.shape for path, rate in rates.items()})
    return {
        path: _summarize(rate, threshold, where.get(path, True)) for path, rate in rates.items()
    }
