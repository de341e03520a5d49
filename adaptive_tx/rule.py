r"""Per-coordinate rules and the dense Optax transformation derived from them.

Every adaptive method in this library is a *rule*: three elementwise functions of a gradient
coordinate :math:`g`, the coordinate's statistics :math:`s` (accumulator, moments) and the 1-based
step :math:`t`:

.. math::

   s_t = \mathrm{accumulate}(g_t, s_{t-1}, t), \qquad
   u_t = \mathrm{direction}(g_t, s_t, t) \odot \mathrm{scale}(s_t, t).

`scale` is the per-coordinate factor that the effective learning rate reads from the state, so the
arithmetic of a method is written once, here in a `Rule`, and every execution path (dense pytrees,
row-sparse tables, diagnostics, lean state) is derived from it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate, sparse

Stats = tuple[jax.Array, ...]


class Rule(NamedTuple):
    """An adaptive method written once, as elementwise functions on arrays.

    Attributes:
      initial: the initial value of each statistic, one scalar per statistic.
      accumulate: ``(g, stats, t) -> stats``: the statistics after seeing gradient ``g`` at step ``t``.
      direction: ``(g, stats, t) -> d``: the direction (``g`` for Adagrad/RMSProp, the first moment for
        the Adam family).
      scale: ``(stats, t) -> s``: the per-coordinate factor, the update being ``d * s``.

    All functions receive float32 (or wider) arrays of one leaf and the step ``t`` as an int32 scalar;
    they must be elementwise so that any subset of coordinates (a row of a table) can be updated alone.

    Example:
      >>> import jax.numpy as jnp
      >>> sign_rule = Rule(initial=(), accumulate=lambda g, s, t: s,
      ...                  direction=lambda g, s, t: jnp.sign(g), scale=lambda s, t: 1.0)
      >>> apply_rule(sign_rule, jnp.array([-2.0, 3.0]), (), jnp.int32(1))[0]
      Array([-1.,  1.], dtype=float32)
    """

    initial: tuple[Any, ...]
    accumulate: Callable[[jax.Array, Stats, jax.Array], Stats]
    direction: Callable[[jax.Array, Stats, jax.Array], jax.Array]
    scale: Callable[[Stats, jax.Array], jax.Array]


def abs_sq(g: jax.Array) -> jax.Array:
    r"""The elementwise squared modulus :math:`|g|^2` (real for complex inputs).

    Example:
      >>> abs_sq(jnp.array([3.0, -2.0]))
      Array([9., 4.], dtype=float32)
    """
    if jnp.iscomplexobj(g):
        return jnp.real(g * jnp.conj(g))
    return g * g


def ema(previous: jax.Array, value: jax.Array, decay: Any) -> jax.Array:
    r"""An exponential moving average step, :math:`(1-\beta)\,x + \beta\,m`, as optax writes it.

    Example:
      >>> ema(jnp.array([1.0]), jnp.array([3.0]), 0.5)
      Array([2.], dtype=float32)
    """
    return (1 - decay) * value + decay * previous


def bias_correction(decay: Any, t: jax.Array) -> jax.Array:
    r"""The scalar :math:`1 - \beta^t`, computed in float32 (float64 under x64) as optax does.

    β is rounded to float32 first, which puts a relative error of up to ~1e-5 in the result for
    β = 0.999 (optax's first Adam step is 0.9999934, not 1). Kept for exact parity with optax.

    Example:
      >>> bias_correction(0.9, jnp.int32(2))
      Array(0.19, dtype=float32)
    """
    return 1 - jnp.asarray(decay, jnp.result_type(float)) ** t


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The dtype a rule computes in: float32 for lower precisions, else the dtype itself.

    Example:
      >>> compute_dtype(jnp.bfloat16)
      dtype('float32')
    """
    return jnp.promote_types(dtype, jnp.float32)


def widen(stats: Stats) -> Stats:
    """The statistics as the rule sees them: float32 (or wider), whatever dtype stores them.

    Example:
      >>> widen((jnp.ones(1, jnp.bfloat16),))[0].dtype
      dtype('float32')
    """
    return tuple(s.astype(compute_dtype(s.dtype)) for s in stats)


def store_hyperparams(hyperparams: Any) -> Any:
    """The hyperparameters as 0-d float arrays (float32; float64 under x64) to keep in a state.

    Flags are stored as 1.0 / 0.0; rules read them with ``jnp.where``, so a rule built from the
    stored values computes what the rule built from the constructor's arguments computes.

    Example:
      >>> store_hyperparams({'eps': 1e-8, 'debias': True})['debias']
      Array(1., dtype=float32)
    """
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.result_type(float)), hyperparams)


def state_scale(rule: Rule, state: Any) -> Any:
    r"""The per-coordinate ``rule.scale`` at the last step of a state made by `dense_transformation`.

    This is the factor the effective learning rate reads: the update of the last step was
    ``direction * scale``. Before the first step it is the scale at :math:`t = 1` of the initial
    statistics.

    Args:
      rule: the rule the state's transformation applies (rebuilt from ``state.hyperparams``).
      state: ``state_type(count, *stats, ...)``.

    Returns:
      A params-shaped tree of float32 (or wider) arrays.

    Example:
      >>> from adaptive_tx.sum_of_squares import scale_by_sum_of_squares
      >>> tx = scale_by_sum_of_squares(initial_accumulator_value=0.0, eps=0.0)
      >>> _, state = tx.update(jnp.array([2.0, 0.5]), tx.init(jnp.zeros(2)))
      >>> state.per_coordinate_scale()
      Array([0.5, 2. ], dtype=float32)
    """
    t = jnp.maximum(state.count, 1)
    stat_trees = tuple(state[1 : 1 + len(rule.initial)])
    return jax.tree.map(lambda *stats: rule.scale(widen(stats), t), *stat_trees)


def apply_rule(rule: Rule, g: jax.Array, stats: Stats, t: jax.Array) -> tuple[jax.Array, Stats]:
    r"""One step of `rule` on arrays of coordinates: returns the update and the new statistics.

    The rule computes in float32 (or wider); the update takes the gradient's dtype and each statistic
    keeps the dtype it is stored in.

    Example:
      >>> from adaptive_tx.sum_of_squares import SumOfSquaresHyperparams, sum_of_squares_rule
      >>> rule = sum_of_squares_rule(SumOfSquaresHyperparams(0.0, 0.0, 0.0))
      >>> update, (acc,) = apply_rule(rule, jnp.array([2.0]),
      ...                             (jnp.array([0.0]),), jnp.int32(1))
      >>> update, acc
      (Array([1.], dtype=float32), Array([4.], dtype=float32))
    """
    wide_g = g.astype(compute_dtype(g.dtype))
    new_stats = rule.accumulate(wide_g, widen(stats), t)
    update = rule.direction(wide_g, new_stats, t) * rule.scale(new_stats, t)
    return update.astype(g.dtype), tuple(n.astype(s.dtype) for n, s in zip(new_stats, stats))


def _full_stats(params: Any, value: Any, dtype: Any, stat_shape: Callable | None) -> Any:
    """A statistic's initial tree: `value` everywhere, shaped like the params or by `stat_shape`."""
    if stat_shape is None:
        return optax.tree.full_like(params, value, dtype=dtype)
    return jax.tree.map(
        lambda p: jnp.full(stat_shape(jnp.shape(p)), value, dtype or jnp.result_type(p)), params
    )


def dense_transformation(
    rule: Rule,
    state_type: type,
    stat_dtypes: Sequence[Any] | None = None,
    hyperparams: Any = None,
    *,
    stat_shape: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None,
) -> optax.GradientTransformation:
    r"""The Optax transformation that applies `rule` to every leaf of a pytree.

    The state is ``state_type(count, *stats, hyperparams=...)``: an int32 step counter that
    saturates at its maximum, then one params-shaped tree per statistic of the rule, in the rule's
    order, then (if given) the hyperparameters the rule was built from, as 0-d arrays, so that the
    rule's scale can be recomputed from the state alone (`state_scale`).

    A `adaptive_tx.sparse.RowSparse` leaf of the gradients takes the row path
    (`adaptive_tx.sparse.apply_rows`): the same `apply_rule` on the gathered rows of its statistics,
    scattered back, with lazy semantics for the untouched rows (see `adaptive_tx.sparse`).

    Args:
      rule: the per-coordinate rule.
      state_type: the `NamedTuple` holding the state; its first field is ``count``.
      stat_dtypes: the storage dtype of each statistic (None: the parameter's dtype).
      hyperparams: a `NamedTuple` of the numbers the rule was built from, kept in the state
        (None: the state has no ``hyperparams`` field).
      stat_shape: the shape of each statistic from the parameter's shape (None: the same shape),
        for rules whose statistics broadcast against the gradient, e.g. one per row
        (`adaptive_tx.sparse.row_shape`).

    Returns:
      An `optax.GradientTransformation`.

    Example:
      >>> import optax
      >>> from adaptive_tx.sum_of_squares import (ScaleBySumOfSquaresState,
      ...     SumOfSquaresHyperparams, sum_of_squares_rule)
      >>> hyperparams = SumOfSquaresHyperparams(0.1, 1e-7, 0.0)
      >>> tx = dense_transformation(sum_of_squares_rule(hyperparams), ScaleBySumOfSquaresState,
      ...                           hyperparams=hyperparams)
      >>> state = tx.init({'w': jnp.zeros(2)})
      >>> updates, state = tx.update({'w': jnp.array([1.0, 0.0])}, state)
      >>> updates['w']
      Array([0.95346, 0.     ], dtype=float32)
    """
    if stat_dtypes is None:
        stat_dtypes = (None,) * len(rule.initial)
    if len(stat_dtypes) != len(rule.initial):
        raise ValueError(
            f"stat_dtypes has {len(stat_dtypes)} entries, the rule has {len(rule.initial)}"
        )
    dtypes = tuple(_validate.check_state_dtype(dtype) for dtype in stat_dtypes)
    where = state_type.__name__.removesuffix("State")
    num_stats = len(rule.initial)
    # One trace per distinct leaf shape and dtype, not per leaf: XLA inlines the calls.
    apply_to_leaf = jax.jit(functools.partial(apply_rule, rule))

    def make_state(count, stats):
        if hyperparams is None:
            return state_type(count, *stats)
        return state_type(count, *stats, hyperparams=store_hyperparams(hyperparams))

    def init_fn(params):
        _validate.check_floating_params(where, params)
        stats = [
            _full_stats(params, value, dtype, stat_shape)
            for value, dtype in zip(rule.initial, dtypes)
        ]
        return make_state(jnp.zeros([], jnp.int32), stats)

    def update_fn(updates, state, params=None):
        del params
        sparse.check_rows(where, updates)
        stat_trees = tuple(state[1 : 1 + num_stats])
        for stats in stat_trees:
            _validate.check_tree_matches(where, sparse.shape_view(updates), stats, stat_shape)
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates, is_leaf=sparse.is_row_sparse)
        stat_leaves = [treedef.flatten_up_to(stats) for stats in stat_trees]
        new_leaves, new_stat_leaves = [], []
        step = functools.partial(apply_to_leaf, t=count)
        for g, *stats in zip(leaves, *stat_leaves):
            if sparse.is_row_sparse(g):
                update, new_stats = sparse.apply_rows(step, g, tuple(stats))
            else:
                update, new_stats = step(g, tuple(stats))
            new_leaves.append(update)
            new_stat_leaves.append(new_stats)
        new_updates = treedef.unflatten(new_leaves)
        new_stat_trees = [
            treedef.unflatten([stats[i] for stats in new_stat_leaves]) for i in range(num_stats)
        ]
        chex.assert_trees_all_equal_shapes_and_dtypes(
            sparse.shape_view(new_updates), sparse.shape_view(updates)
        )
        return new_updates, make_state(count, new_stat_trees)

    return optax.GradientTransformation(init_fn, update_fn)
