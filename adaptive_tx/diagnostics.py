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
  :math:`\beta_1 \frac{1-\beta_1^t}{1-\beta_1^{t+1}} m_t + (1-\beta_1) g_t`);
- ADOPT: :math:`\eta` (its direction, the momentum :math:`m_t` of normalized clipped gradients,
  or the look-ahead :math:`\beta_1 m_t + (1-\beta_1)\,\mathrm{clip}(g_t/\max(\sqrt{v_{t-1}},
  \epsilon))`, holds the adaptivity); LaProp: :math:`\eta / (1-\beta_1^t)` (direction: the
  momentum of :math:`g_t / (\sqrt{\hat v_t} + \epsilon)`);
- Adan: :math:`\eta / (\sqrt{n_t/(1-\beta_3^t) + \epsilon_{root}} + \epsilon)` (direction
  :math:`\hat m_t + (1-\beta_2)\hat v_t`); AdEMAMix:
  :math:`\eta / (\sqrt{\nu_t/(1-\beta_2^t) + \epsilon_{root}} + \epsilon)` (direction
  :math:`m^{(1)}_t/(1-\beta_1^t) + \alpha\, m^{(2)}_t`);
- Adadelta: :math:`\eta / \sqrt{E[g^2]_t + \epsilon}`, its direction the gradient in the units of
  the past steps, :math:`d_t = \sqrt{E[\Delta x^2]_{t-1} + \epsilon}\; g_t` (the average of the
  steps *before* the last one, which the state no longer holds: the rate is the part of the step
  the state determines);
- AdaBelief, Yogi: Adam's, with their own second statistic for :math:`v_t` (AdaBelief's
  :math:`s_t`, the EMA of :math:`(g_t - m_t)^2` plus :math:`\epsilon_{root}`; Yogi's additive
  :math:`v_t`), the direction :math:`m_t` (AdaBelief's ``nesterov``: NAdam's look-ahead);
- Rprop: the step sizes :math:`\eta_t` in the state (the alias's learning rate is 1), its direction
  :math:`\operatorname{sign}(g_t)`, 0 where the gradient's sign flipped (that step is skipped);
- Lion: :math:`\eta` for every coordinate, its direction
  :math:`d_t = \operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t)` (plus the decoupled weight
  decay below).

A scheduled learning rate contributes the rate of the last step. The rate includes the first
moment's bias correction :math:`1/(1-\beta_1^t)` (10 at the first Adam step with
:math:`\beta_1 = 0.9`), because the direction it multiplies is the raw :math:`m_t`.

Where the update is not :math:`-\eta_{\text{eff}} \odot d_t` alone, it is, exactly
(:math:`\theta_{t-1}` the parameters given to the step, :math:`\lambda_t` the weight decay):

- decoupled weight decay (``adamw``, ``nadamw``, ``adamaxw``, ``lion``, torch's ``AdamW``, keras'
  ``weight_decay``): :math:`u_t = -\eta_{\text{eff}} \odot d_t - \eta_t \lambda_t \theta_{t-1}`
  (where the mask applies);
- a momentum trace after the learning rate (``rmsprop(momentum=μ)``, keras' RMSprop):
  :math:`u_t = -\eta_{\text{eff}} \odot d_t + \mu\, b_{t-1}`, or with ``nesterov``
  :math:`u_t = -(1+\mu)\,\eta_{\text{eff}} \odot d_t + \mu^2 b_{t-1}` (:math:`b` the trace in the
  state); before the learning rate (torch's RMSprop):
  :math:`u_t = -\eta_{\text{eff}} \odot d_t - \eta_t \mu\, b_{t-1}`;
- cautious masking (`adaptive_tx.cautious`): :math:`u_t = -(\phi_t / \max(\bar\phi_t,
  \text{floor})) \odot \eta_{\text{eff}} \odot d_t` with :math:`\phi_t` the sign-agreement mask
  of this step's update and gradient and :math:`\bar\phi_t` its mean over the leaf: the mask is
  not kept in the state, so the rate leaves it out;
- LAMB (``lamb``): the rate is Adam's (``eps`` = 1e-6); each leaf's step is then multiplied by
  its trust ratio, :math:`u_t = -r\,(\eta_{\text{eff}} \odot m_t + \eta_t \lambda_t \theta_{t-1})`
  with :math:`r = \|\theta_{t-1}\| / \|\eta_{\text{eff}} \odot m_t / \eta_t + \lambda_t
  \theta_{t-1}\|` per leaf (1 where a norm is 0), left out of the rate;
- FTRL-Proximal (``ftrl``, keras' ``Ftrl``), whose rule gives the new parameter: the rate is
  :math:`\alpha / (n_t^{-p} + \beta + 2\lambda_2\alpha)` (the learning rate is inside it; 0
  where the denominator is), the direction the soft-thresholded linear term
  :math:`d_t = z_t - \mathrm{clip}(z_t, -\lambda_1, \lambda_1)`, and
  :math:`u_t = -\eta_{\text{eff}} \odot d_t - \theta_{t-1}` (:math:`\theta_t = -\eta_{\text{eff}}
  \odot d_t`);
- SM3 (``sm3``): the rate is :math:`\eta` (its direction, the momentum of
  :math:`g_t / \sqrt{v_t + \epsilon}` with :math:`v_t` the cover-set accumulator, holds the
  adaptivity), as for ADOPT; NovoGrad (``novograd``): the rate is :math:`\eta`, the direction
  :math:`m_t = \beta_1 m_{t-1} + g_t / (\sqrt{v_t + \epsilon_{root}} + \epsilon) +
  \lambda\theta_{t-1}` with one :math:`v_t` per leaf (the per-leaf factor
  :math:`\eta / (\sqrt{v_t + \epsilon_{root}} + \epsilon)` is the rate of the last gradient
  only: the momentum mixes the factors of past steps);
- schedule-free AdamW (``schedule_free_adamw``, `adaptive_tx.averaging`): the rate is the
  step of :math:`z`, :math:`\eta_t / (\sqrt{\nu_t/(1-\beta_2^t)} + \epsilon)` (AdamW's with
  :math:`\beta_1 = 0`; direction :math:`g_t`, taken at the parameters :math:`y_{t-1}`), so
  :math:`\Delta z_t = -\eta_{\text{eff}} \odot g_t - \eta_t \lambda\, y_{t-1}`; the parameters
  then move by :math:`u_t = (1-\beta_1)\,\Delta z_t + \beta_1 c_t\,(z_t - x_{t-1})`, with
  :math:`x_{t-1} = (y_{t-1} - (1-\beta_1) z_{t-1})/\beta_1` and the averaging weight
  :math:`c_t = \eta_{\max,t}^{p} / \sum_{s \le t} \eta_{\max,s}^{p}` (the state's
  ``weight_sum`` and ``max_lr``);
- transformations that keep no state are invisible to the state and left out. Adafactor
  (``adafactor``, keras' ``Adafactor``) clips each leaf's step to RMS :math:`c`
  (``clipping_threshold``) after the scale and multiplies it by the parameter's RMS:
  :math:`u_t = -\kappa\, \eta_{\text{eff}} \odot g_t` with, per leaf,
  :math:`\kappa = \min\!\big(1, c / \mathrm{RMS}(g_t\, \eta_{\text{eff}} / \eta_t)\big)
  \cdot \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))` (each factor 1 when its option is off;
  :math:`\epsilon_2 = 10^{-3}`), without its momentum and weight decay. With a parameter RMS of
  10, say, the step is 10 times the rate's.

Transformations before the adaptive rule (gradient clipping, the coupled L2 term of torch's presets
and of ``adadelta``, a sign flip) change the gradient the rule sees; :math:`d_t` is computed from
that gradient.

The rate shows how an adaptive method treats each coordinate: a rare coordinate keeps a large
rate, and Adagrad's rates only ever shrink (the "dying learning rate"), which
`effective_learning_rate_summary` turns into an alarm.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from adaptive_tx.learning_rate import LEARNING_RATE_STATES


class RateSummary(NamedTuple):
    """Statistics of the effective learning rates of one leaf (0-d float32 arrays).

    Attributes:
      min, median, max, mean: over the leaf's coordinates (NaN for an empty leaf, and all five
        NaN if any summarized rate is NaN).
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


def _applied_rate(part: Any) -> jax.Array:
    """The learning rate a `scale_by_learning_rate` state applied at its last step."""
    return part.rate


def _unwrap(opt_state: Any) -> Any:
    """A `flax.nnx.Optimizer`'s ``opt_state`` holds variables; the rates are computed on arrays.

    flax is not imported here: if ``flax.nnx`` was never imported, the state holds no variables.
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is None:
        return opt_state

    def value(leaf: Any) -> Any:
        if not isinstance(leaf, nnx.Variable):
            return leaf
        # A multi_transform group's placeholder for another group's leaf stays a placeholder
        # (as an array it would be an empty float array).
        inner = leaf.get_value()
        return inner if _is_masked(inner) else jnp.asarray(inner)

    return jax.tree.map(value, opt_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _parts(state: Any) -> tuple[list, list]:
    """The adaptive states and the learning-rate states found in `state`."""
    parts = jax.tree.leaves(state, is_leaf=_is_part)
    scales = [part for part in parts if hasattr(part, "per_coordinate_scale")]
    rates = [part for part in parts if isinstance(part, LEARNING_RATE_STATES)]
    return scales, rates


def _rate_of(state: Any, where: str) -> Any:
    """learning rate x scale of a state holding one adaptive primitive and one learning rate."""
    scales, rates = _parts(state)
    if len(scales) == 1 and not rates and getattr(scales[0], "includes_learning_rate", False):
        return scales[0].per_coordinate_scale()  # FTRL: the rate is inside the rule
    if len(scales) != 1 or len(rates) != 1:
        raise ValueError(
            f"effective_learning_rate needs {where} to hold exactly one adaptive primitive and "
            f"one scale_by_learning_rate; found {len(scales)} adaptive states "
            f"({', '.join(type(s).__name__ for s in scales) or 'none'}) and {len(rates)} "
            "learning-rate states"
        )
    learning_rate = _applied_rate(rates[0])
    return jax.tree.map(lambda s: learning_rate * s, scales[0].per_coordinate_scale())


def _is_masked(node: Any) -> bool:
    return isinstance(node, optax.MaskedNode)


def _group_rates(groups: optax.MultiTransformState, params: Any) -> Any:
    """One params-shaped tree from the groups of an ``optax.multi_transform`` state."""
    trees = []
    for label, group in groups.inner_states.items():
        if _parts(group) != ([], []):  # a group without an adaptive method (SGD, frozen) has none
            trees.append(_rate_of(group, f"the multi_transform group {label!r}"))
    if not trees:
        raise ValueError(
            "effective_learning_rate: no group of the multi_transform state holds an adaptive "
            f"primitive (groups: {', '.join(repr(k) for k in groups.inner_states)})"
        )

    def pick(reference: Any, *candidates: Any) -> Any:
        found = [c for c in candidates if not _is_masked(c)]
        if found:
            return found[0]
        if params is None:
            raise ValueError(
                "effective_learning_rate: a parameter of this multi_transform state is updated by "
                "no group with an adaptive method (SGD, a frozen group), so the state does not "
                "give its shape; pass params= (the parameters) to get NaN rates for it"
            )
        return jnp.full(jnp.shape(reference), jnp.nan, jnp.float32)

    reference = trees[0] if params is None else params
    return jax.tree.map(pick, reference, *trees, is_leaf=_is_masked)


def effective_learning_rate(
    opt_state: optax.OptState, params: optax.Params | None = None
) -> optax.Updates:
    r"""The per-coordinate effective learning rate of the last step, shaped like the parameters.

    .. math::

       \eta_{\text{eff}} = \eta_t \cdot \mathrm{scale}(s_t, t), \qquad u_t = -\eta_{\text{eff}} \odot d_t,

    with :math:`d_t = g_t` (Adagrad, RMSProp) or :math:`m_t` (Adam family; NAdam's look-ahead);
    see the module docstring for each method's closed form, the first moment's bias correction
    :math:`1/(1-\beta_1^t)` that the rate includes, and exactly what is left out where the update
    has other terms (weight decay, momentum, Adafactor's clipping and parameter scale). Jittable.

    Before the first step (a state fresh from ``init``) no update has used a rate yet; the value
    is the scale of the initial statistics at :math:`t = 1`, the rate a first step would use on a
    coordinate whose gradient adds nothing to them: for Adam :math:`\eta / (1-\beta_1) / \epsilon`
    (:math:`10^6` at :math:`\eta = 10^{-3}, \epsilon = 10^{-8}`, the 10 being
    :math:`1/(1-\beta_1)`), :math:`\infty` for Adafactor (:math:`\hat v_0 = 0`). Read it after a
    step.

    The state must hold one adaptive primitive of this library and one `scale_by_learning_rate`
    (any alias or compat preset, or a chain with one such primitive), or be an
    ``optax.multi_transform`` state whose groups each hold at most one: each parameter's rate is
    then read from the group that updates it, and a parameter no group with an adaptive method
    updates (an SGD or a frozen group) gets NaN. The state of a `flax.nnx.Optimizer`
    (``optimizer.opt_state``) is accepted as is.

    Reference: the per-coordinate step :math:`\eta/\sqrt{G_{t,ii}}` of Duchi, Hazan & Singer,
    "Adaptive Subgradient Methods for Online Learning and Stochastic Optimization", JMLR 2011,
    https://jmlr.org/papers/v12/duchi11a.html

    Args:
      opt_state: the optimizer's state.
      params: the parameters (arrays or anything with a shape), needed only for a
        ``multi_transform`` state with parameters that no adaptive group updates: their shape is
        not in the state.

    Returns:
      A tree shaped like the parameters, of float32 (or wider) arrays.

    Raises:
      ValueError: if the state (or a ``multi_transform`` group) holds no adaptive primitive or
        learning rate, or more than one; or if a parameter no adaptive group updates needs
        ``params`` for its shape.

    Example:
      >>> import jax.numpy as jnp, optax, adaptive_tx as atx
      >>> tx = atx.adagrad(0.5, initial_accumulator_value=0.0, eps=0.0)
      >>> _, state = tx.update(jnp.array([2.0, 0.25]), tx.init(jnp.zeros(2)))
      >>> effective_learning_rate(state)  # 0.5 / |g|
      Array([0.25, 2.  ], dtype=float32)
      >>> groups = {'table': atx.rowwise_adagrad(0.5, eps=0.0),
      ...           'rest': atx.adagrad(0.1, 0.0, eps=0.0), 'frozen': optax.set_to_zero()}
      >>> tx = optax.multi_transform(groups, {'emb': 'table', 'w': 'rest', 'b': 'frozen'})
      >>> params = {'emb': jnp.zeros((2, 2)), 'w': jnp.zeros(1), 'b': jnp.zeros(1)}
      >>> grads = {'emb': jnp.array([[2.0, 2.0], [0.0, 0.0]]), 'w': jnp.array([4.0]),
      ...          'b': jnp.ones(1)}
      >>> _, state = tx.update(grads, tx.init(params))
      >>> rates = effective_learning_rate(state, params)
      >>> rates['emb'].ravel()  # one rate per row: 0.5 / 2, and 0 for a row never seen
      Array([0.25, 0.  ], dtype=float32)
      >>> rates['w'], rates['b']  # 0.1 / 4; the frozen group has no rate
      (Array([0.025], dtype=float32), Array([nan], dtype=float32))
    """
    state = _unwrap(opt_state)
    is_groups = lambda x: isinstance(x, optax.MultiTransformState)  # noqa: E731
    groups = [node for node in jax.tree.leaves(state, is_leaf=is_groups) if is_groups(node)]
    if not groups:
        return _rate_of(state, "the state")
    inside = sum(len(_parts(group)[0]) + len(_parts(group)[1]) for group in groups)
    scales, rates = _parts(state)
    if len(groups) > 1 or inside != len(scales) + len(rates):
        raise ValueError(
            "effective_learning_rate needs one multi_transform state holding every adaptive "
            f"primitive and learning rate; found {len(groups)} multi_transform states and "
            f"{len(scales) + len(rates) - inside} adaptive or learning-rate states outside them"
        )
    return _group_rates(groups[0], params)


def _summarize(rate: jax.Array, threshold: float, where: Any = True) -> RateSummary:
    rate = rate.astype(jnp.float32)
    if rate.size == 0:
        nan = jnp.full([], jnp.nan, jnp.float32)
        return RateSummary(nan, nan, nan, nan, nan)
    keep = jnp.broadcast_to(jnp.asarray(where, bool), rate.shape)
    # Coordinates left out by `where` are NaN here and skipped (none kept: NaN, like an empty
    # leaf); a NaN rate among the kept ones makes every statistic NaN, never a healthy number.
    kept = jnp.where(keep, rate, jnp.nan)
    poisoned = jnp.any(keep & jnp.isnan(rate))
    summary = RateSummary(
        min=jnp.nanmin(kept),
        median=jnp.nanmedian(kept),
        max=jnp.nanmax(kept),
        mean=jnp.nanmean(kept),
        fraction_below=jnp.sum(keep & (rate < threshold)) / jnp.sum(keep, dtype=jnp.float32),
    )
    return RateSummary(*(jnp.where(poisoned, jnp.nan, x) for x in summary))


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
    opt_state: optax.OptState,
    threshold: float = 1e-6,
    where: Mapping[str, ArrayLike] | None = None,
    params: optax.Params | None = None,
) -> dict[str, RateSummary]:
    r"""Per-leaf statistics of the effective learning rate, for training-loop logging (jittable).

    For every parameter leaf: min, median, max and mean of :math:`\eta_{\text{eff}}` over its
    coordinates, and the fraction of coordinates with :math:`\eta_{\text{eff}} <` ``threshold``:
    the "dying learning rate" alarm (Adagrad's rates only shrink; a layer whose fraction climbs to
    1 has stopped learning). ``where`` restricts a leaf's statistics to some of its coordinates:
    the rows of an embedding table that were looked up so far, say. A row that no gradient has
    reached has the rate of its initial statistics (:math:`\eta/\epsilon` for Adam, whose
    :math:`v` is 0), which would otherwise dominate the table's median.

    A NaN rate is never skipped: if any summarized coordinate of a leaf has a NaN rate, all five
    statistics of the leaf are NaN (so is a leaf that no adaptive group of a ``multi_transform``
    updates), and a logger sees it.

    Args:
      opt_state: the optimizer's state (see `effective_learning_rate`).
      threshold: the rate below which a coordinate counts as dying.
      where: optional dict from a leaf's path to a boolean mask broadcastable to the leaf's shape
        (``{"embed/embedding": seen[:, None]}``); only the coordinates where it is True are
        summarized (all NaN if none). Leaves not named are summarized whole.
      params: passed to `effective_learning_rate` (a ``multi_transform`` state with parameters
        that no adaptive group updates).

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
        for path, rate in jax.tree_util.tree_leaves_with_path(
            effective_learning_rate(opt_state, params)
        )
    }
    where = _masks(where, {path: rate.shape for path, rate in rates.items()})
    return {
        path: _summarize(rate, threshold, where.get(path, True)) for path, rate in rates.items()
    }
