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

What a rule may see. By default: the gradient coordinate, its statistics and the step. Three
optional fields (at the end of `Rule`, off by default, so every other rule is unchanged) widen
that, still coordinate by coordinate (a row of a table can still be updated alone):

* ``reads_params``: ``accumulate`` and ``direction`` also receive the parameter coordinate
  :math:`\theta_{t-1}` as a fourth argument (FTRL-Proximal's linear term
  :math:`z \mathrel{+}= g - \sigma\theta`). The dense path passes the parameter leaf, the
  row-sparse path gathers its rows like a statistic; ``update`` then needs ``params``.
* ``gives_params``: the rule gives the new parameter in closed form,
  :math:`\theta_t = -\mathrm{direction} \odot \mathrm{scale}`, and the update is
  :math:`u_t = \theta_t - \theta_{t-1}` (FTRL: a coordinate whose closed form is 0 becomes exactly
  0 after ``optax.apply_updates``). Needs ``reads_params``.
* ``reads_previous``: ``direction`` also receives the statistics *before* the step,
  :math:`\mathrm{direction}(g_t, s_t, t, s_{t-1})` (after the parameter, where the rule reads it
  too): Lion's sign of an interpolation with :math:`m_{t-1}`, Adadelta's
  :math:`\sqrt{E[\Delta x^2]_{t-1}+\epsilon}\, g_t`. The scale never reads :math:`s_{t-1}`: it
  is a function of the state alone, so that the effective learning rate of the last step can be
  read from the state after it (the statistics before the step are not kept).

A rule's numbers may also be the step's: `adaptive_tx.schedule_free` builds its interpolation
rule (``reads_params``, ``reads_previous`` and ``gives_params``, its statistic :math:`z`) at each
step with that step's averaging weight :math:`c_t`, a function of the learning rates seen so far
that its own state keeps, and applies it with `apply_rule` to dense leaves and to touched rows,
as `dense_transformation` does.

A factor computed from a whole leaf (a norm, LAMB's trust ratio, NovoGrad's per-leaf second
moment) is not a rule's: it is a transformation of its own in the chain (`adaptive_tx.layerwise`),
which refuses row-sparse leaves. A statistic kept in fewer numbers than coordinates (SM3's
per-axis maxima) is not a rule's either: it is a *storage* of the statistic
(`adaptive_tx.CoverSet`, like `adaptive_tx.Factored`), and the rule runs on it as decoded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate, counter_bits, sparse, state_precision
from adaptive_tx.state_precision import compute_dtype

Stats = tuple[jax.Array, ...]


class Rule(NamedTuple):
    """An adaptive method written once, as elementwise functions on arrays.

    Attributes:
      initial: the initial value of each statistic, one scalar per statistic.
      accumulate: ``(g, stats, t) -> stats``: the statistics after seeing gradient ``g`` at step ``t``.
      direction: ``(g, stats, t) -> d``: the direction (``g`` for Adagrad/RMSProp, the first moment for
        the Adam family).
      scale: ``(stats, t) -> s``: the per-coordinate factor, the update being ``d * s``.
      reads_params: whether ``accumulate`` and ``direction`` take the parameter as a fourth
        argument, ``(g, stats, t, p)`` (default False).
      gives_params: whether ``-direction * scale`` is the new parameter, the update being it minus
        the parameter (default False: the update is ``direction * scale``); needs
        ``reads_params``.
      reads_previous: whether ``direction`` also takes the statistics before the step, after the
        parameter if it reads it: ``(g, stats, t, previous) -> d`` (Lion, Adadelta; default
        False). The scale reads the new statistics only, so that `state_scale` computes it from
        a state.

    All functions receive float32 (or wider) arrays of one leaf and the step ``t`` as an int32 scalar;
    they must be elementwise so that any subset of coordinates (a row of a table) can be updated alone.

    Example:
      >>> import jax.numpy as jnp
      >>> sign_rule = Rule(initial=(), accumulate=lambda g, s, t: s,
      ...                  direction=lambda g, s, t: jnp.sign(g), scale=lambda s, t: 1.0)
      >>> apply_rule(sign_rule, jnp.array([-2.0, 3.0]), (), jnp.int32(1))[0]
      Array([-1.,  1.], dtype=float32)
    """

    initial: tuple[float | jax.Array, ...]
    accumulate: Callable[[jax.Array, Stats, jax.Array], Stats]
    direction: Callable[[jax.Array, Stats, jax.Array], jax.Array]
    scale: Callable[[Stats, jax.Array], jax.Array]
    reads_params: bool = False
    gives_params: bool = False
    reads_previous: bool = False


def abs_sq(g: jax.Array) -> jax.Array:
    r"""The elementwise squared modulus :math:`|g|^2` (real for complex inputs).

    Example:
      >>> abs_sq(jnp.array([3.0, -2.0]))
      Array([9., 4.], dtype=float32)
    """
    if jnp.iscomplexobj(g):
        return jnp.real(g * jnp.conj(g))
    return g * g


def ema(previous: jax.Array, value: jax.Array, decay: float | jax.Array) -> jax.Array:
    r"""An exponential moving average step, :math:`(1-\beta)\,x + \beta\,m`, as optax writes it.

    Example:
      >>> ema(jnp.array([1.0]), jnp.array([3.0]), 0.5)
      Array([2.], dtype=float32)
    """
    return (1 - decay) * value + decay * previous


def bias_correction(decay: float | jax.Array, t: jax.Array) -> jax.Array:
    r"""The scalar :math:`1 - \beta^t`, computed in float32 (float64 under x64) as optax does.

    β is rounded to float32 first, which puts a relative error of up to ~1e-5 in the result for
    β = 0.999 (optax's first Adam step is 0.9999934, not 1) and 1.4e-3 for β = 0.99999. Kept for
    exact parity with optax and keras, which round β the same way; `exact_bias_correction` is
    torch's float64 value.

    Example:
      >>> bias_correction(0.9, jnp.int32(2))
      Array(0.19, dtype=float32)
    """
    return 1 - jnp.asarray(decay, jnp.result_type(float)) ** t


def log_decay(one_minus_decay: float | jax.Array) -> float | jax.Array:
    r""":math:`\log\beta` from :math:`1-\beta`, finite (``-1e4`` for β = 0, where it is −∞).

    A Python number is computed in float64 (``math.log1p``); an array (an injected β) with
    ``jnp.log1p``, which loses nothing: :math:`1-\beta` of a float32 β ≥ 0.5 is exact.

    Example:
      >>> log_decay(1e-5)  # log(0.99999), to float64 precision
      -1.0000050000333337e-05
    """
    if isinstance(one_minus_decay, (int, float)):
        return math.log1p(-one_minus_decay) if one_minus_decay < 1 else -1e4
    a = jnp.asarray(one_minus_decay, jnp.result_type(float))
    below_one = a < 1
    return jnp.where(below_one, jnp.log1p(-jnp.where(below_one, a, 0.0)), -1e4)


def exact_bias_correction(one_minus_decay: float | jax.Array, t: jax.Array) -> jax.Array:
    r"""The scalar :math:`1 - \beta^t` as float64 gives it (torch's), rounded once to float32.

    Computed as :math:`-\mathrm{expm1}(t \log\beta)` with :math:`\log\beta` from
    :math:`1-\beta` in float64 (`log_decay`): a relative error of ~1e-7 whatever β, where
    `bias_correction` (β rounded to float32 first) is 1.4e-3 off at β = 0.99999 and t = 1.

    Example:
      >>> exact_bias_correction(1e-5, jnp.int32(1))  # 1 - 0.99999
      Array(1.e-05, dtype=float32)
    """
    dtype = jnp.result_type(float)
    return -jnp.expm1(jnp.asarray(t, dtype) * log_decay(one_minus_decay))


def inverse_root(x: jax.Array, eps_root: float | jax.Array, eps: float | jax.Array) -> jax.Array:
    r""":math:`1 / (\sqrt{x + \epsilon_{root}} + \epsilon)`, with one ``rsqrt`` when ε is a literal 0.

    ``rsqrt`` is one instruction where a square root and a division are two, and the
    Adagrad / RMSProp step is compute-bound enough on a CPU for that to show (Adagrad at 2^24
    coordinates on 2 cores: 1.21x optax's time with the division, 1.04x with ``rsqrt``, which
    optax uses); the two agree to an ulp. Rebuilt from a state, ε is an array and the general
    form is used.

    Example:
      >>> inverse_root(jnp.array([4.0]), 0.0, 0.0), inverse_root(jnp.array([4.0]), 0.0, 1.0)
      (Array([0.5], dtype=float32), Array([0.33333334], dtype=float32))
    """
    if isinstance(eps, (int, float)) and eps == 0:
        return jax.lax.rsqrt(x + eps_root)
    return 1 / (jnp.sqrt(x + eps_root) + eps)


def widen(stats: Stats) -> Stats:
    """The statistics as the rule sees them: float32 (or wider), however they are stored.

    The one place a stored statistic is decoded (`adaptive_tx.state_precision.decode`): a
    bfloat16 array is upcast, 8-bit codes are looked up and scaled, factored means are multiplied
    out.

    Example:
      >>> widen((jnp.ones(1, jnp.bfloat16),))[0].dtype
      dtype('float32')
    """
    return tuple(state_precision.decode(s) for s in stats)


def store_hyperparams(hyperparams: NamedTuple) -> jax.Array:
    """The hyperparameters packed in one float array (float32; float64 under x64) for a state.

    One array, not one 0-d array per field: every state leaf costs the jitted step a buffer to
    pass in and out (about 1.5 µs each on CPU, more on GPU). Flags are stored as 1.0 / 0.0; rules
    read them with ``jnp.where``, so a rule built from the stored values (``Hyperparams(*stored)``)
    computes what the rule built from the constructor's arguments computes.

    Example:
      >>> from adaptive_tx.sum_of_squares import SumOfSquaresHyperparams
      >>> stored = store_hyperparams(SumOfSquaresHyperparams(0.1, 1e-7, False))
      >>> stored
      Array([1.e-01, 1.e-07, 0.e+00], dtype=float32)
      >>> SumOfSquaresHyperparams(*stored).eps_root
      Array(1.e-07, dtype=float32)
    """
    dtype = jnp.result_type(float)
    return jnp.stack([jnp.asarray(value, dtype) for value in hyperparams])


def state_scale(rule: Rule, state: NamedTuple) -> optax.Updates:
    r"""The per-coordinate ``rule.scale`` at the last step of a state made by `dense_transformation`.

    This is the factor the effective learning rate reads: the update of the last step was
    ``direction * scale``. Before the first step it is the scale at :math:`t = 1` of the initial
    statistics.

    Args:
      rule: the rule the state's transformation applies (rebuilt from ``state.packed_hyperparams``).
      state: ``state_type(count, *stats, ...)``.

    Returns:
      A params-shaped tree of float32 (or wider) arrays (where every statistic is kept per block,
      `BlockMean`, one factor per block, broadcastable to the parameter).

    Example:
      >>> from adaptive_tx.sum_of_squares import scale_by_sum_of_squares
      >>> tx = scale_by_sum_of_squares(initial_accumulator_value=0.0, eps=0.0)
      >>> _, state = tx.update(jnp.array([2.0, 0.5]), tx.init(jnp.zeros(2)))
      >>> state.per_coordinate_scale()
      Array([0.5, 2. ], dtype=float32)
    """
    t = jnp.maximum(state.count, 1)
    stat_trees = tuple(state[1 : 1 + len(rule.initial)])
    first = stat_trees[0]
    treedef = jax.tree.structure(first[0] if state_precision.is_stored(first) else first)
    stat_leaves = [state_precision.split(stats, treedef) for stats in stat_trees]
    return treedef.unflatten([rule.scale(widen(stats), t) for stats in zip(*stat_leaves)])


def apply_rule(
    rule: Rule,
    g: jax.Array,
    stats: Stats,
    t: jax.Array,
    storages: Sequence[state_precision.Storage] | None = None,
    key: jax.Array | None = None,
    param: jax.Array | None = None,
) -> tuple[jax.Array, Stats]:
    r"""One step of `rule` on arrays of coordinates: returns the update and the new statistics.

    The rule computes in float32 (or wider) on the decoded statistics (`widen`); the update takes
    the gradient's dtype promoted with the statistics' (`update_dtype`: float32 for a bfloat16 or
    integer gradient on float32 parameters, as in optax) and each new statistic is encoded by its
    storage (`adaptive_tx.state_precision`; None: kept in the dtype it is stored in). The update
    reads the new float32 statistics, or, for storages that estimate (``reads_stored``: factored,
    per block), the statistics as stored.

    Args:
      rule: the per-coordinate rule.
      g: the gradient coordinates.
      stats: the stored statistics of these coordinates, in the rule's order.
      t: the 1-based step, int32.
      storages: one storage per statistic (None: `state_precision.Cast` for all).
      key: a PRNG key for storages that round stochastically, distinct per leaf and step (the
        statistic's index is folded in here); None rounds them to nearest.
      param: the parameter coordinates, for a rule that ``reads_params`` (else unused).

    Example:
      >>> from adaptive_tx.sum_of_squares import SumOfSquaresHyperparams, sum_of_squares_rule
      >>> rule = sum_of_squares_rule(SumOfSquaresHyperparams(0.0, 0.0, 0.0))
      >>> update, (acc,) = apply_rule(rule, jnp.array([2.0]),
      ...                             (jnp.array([0.0]),), jnp.int32(1))
      >>> update, acc
      (Array([1.], dtype=float32), Array([4.], dtype=float32))
    """
    if storages is None:
        storages = (state_precision.Cast(),) * len(stats)
    wide_g = g.astype(compute_dtype(g.dtype))
    seen_param = ()
    if rule.reads_params:
        if param is None:
            raise ValueError("apply_rule: this rule reads the parameters: pass param=")
        seen_param = (jnp.asarray(param).astype(compute_dtype(jnp.result_type(param))),)
    wide_stats = widen(stats)  # decoded once: accumulate, and direction with reads_previous
    new_stats = rule.accumulate(wide_g, wide_stats, t, *seen_param)
    for new, old in zip(new_stats, stats):
        if jnp.iscomplexobj(new) and not state_precision.is_stored(old):
            if not jnp.iscomplexobj(old):
                raise ComplexToRealError(jnp.result_type(g), jnp.result_type(old))
    stored = tuple(
        storage.encode(new, old, None if key is None else counter_bits.fold_in(key, i))
        for i, (storage, new, old) in enumerate(zip(storages, new_stats, stats))
    )
    seen = tuple(
        state_precision.decode(kept) if storage.reads_stored else new
        for storage, new, kept in zip(storages, new_stats, stored)
    )
    previous = (wide_stats,) if rule.reads_previous else ()
    update = rule.direction(wide_g, seen, t, *seen_param, *previous) * rule.scale(seen, t)
    if rule.gives_params:  # the new parameter minus the old one
        update = -update - seen_param[0]
    return update.astype(update_dtype(g, stats)), stored


def update_dtype(g: jax.Array, stats: Stats) -> jnp.dtype:
    """The dtype of the update: the gradient's promoted with the statistics' (as optax's is).

    optax computes the update from its state, which has the parameters' dtype, so its update has
    the dtype of the gradient promoted with the parameters': float32 for a bfloat16 gradient on
    float32 parameters, and a float update for an integer or boolean gradient (whose values are
    used as numbers: ``True`` is 1). Here the statistics stand for the parameters: a statistic
    kept as a plain array counts with its dtype, one kept in a container (8-bit, factored) with
    float32, the dtype it decodes to. A rule without statistics keeps a float gradient's dtype.

    Example:
      >>> update_dtype(jnp.ones(2, jnp.bfloat16), (jnp.zeros(2),))
      dtype('float32')
      >>> update_dtype(jnp.array([3, -2]), (jnp.zeros(2, jnp.bfloat16),))
      dtype(bfloat16)
    """
    dtypes = [d for d in (_stored_dtype(s) for s in stats) if d is not None]
    if not dtypes and not jnp.issubdtype(g.dtype, jnp.inexact):
        dtypes = [jnp.float32]
    return jnp.result_type(g.dtype, *dtypes)


def _stored_dtype(stat: Any) -> Any:
    """A statistic's dtype where it is the parameter's: a plain array's, factored means' (kept in
    the parameter's dtype); None for 8-bit codes, whose dtype says nothing of the parameter."""
    if not state_precision.is_stored(stat):
        return jnp.result_type(stat)
    if getattr(stat, "_fields", None) == ("row", "col"):  # FactoredArray
        return jnp.result_type(stat.row)
    return None


class ComplexToRealError(TypeError):
    """A complex statistic (from a complex gradient) would be kept in a real array."""

    def __init__(self, g_dtype: Any, stat_dtype: Any):
        super().__init__(g_dtype, stat_dtype)
        self.g_dtype, self.stat_dtype = g_dtype, stat_dtype

    def message(self, where: str, leaf: str) -> str:
        return (
            f"{where}: gradient leaf {leaf} is {self.g_dtype} but a complex statistic of it is "
            f"kept as {self.stat_dtype} (a real parameter's, or a real mu_dtype): the imaginary "
            "part would be dropped; give complex gradients to complex parameters with complex "
            "or default state dtypes (or pass the real part, jnp.real(g))"
        )


def _apply_rows(step: Callable, g: Any, stats: Stats, param: Any) -> tuple:
    """`sparse.apply_rows`; a rule that reads the parameters gets the touched rows of it (gathered
    like a statistic, never written back: the update carries the change)."""
    if param is None:
        return sparse.apply_rows(step, g, stats)

    def with_param_rows(g_rows, rows):
        update, new_rows = step(g_rows, rows[:-1], param=rows[-1])  # the rows, not the leaf
        return update, (*new_rows, rows[-1])

    update, new_stats = sparse.apply_rows(with_param_rows, g, (*stats, param))
    return update, new_stats[:-1]


def _stat_like(param: Any, stat_shape: Callable | None) -> Any:
    """What a statistic's storage is initialised like: the parameter, or its `stat_shape`."""
    if stat_shape is None:
        return param
    shape = stat_shape(jnp.shape(param))
    return state_precision.full_like(param, 0, jnp.result_type(param), shape)


def dense_transformation(
    rule: Rule,
    state_type: type,
    stat_dtypes: Sequence[state_precision.StorageSpec] | None = None,
    hyperparams: NamedTuple | None = None,
    *,
    stat_shape: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None,
) -> optax.GradientTransformation:
    r"""The Optax transformation that applies `rule` to every leaf of a pytree.

    The state is ``state_type(count, *stats, packed_hyperparams=...)``: an int32 step counter that
    saturates at its maximum, then one params-shaped tree per statistic of the rule, in the rule's
    order, then (if given) the hyperparameters the rule was built from, packed in one array, so
    that the rule's scale can be recomputed from the state alone (`state_scale`).

    A `adaptive_tx.sparse.RowSparse` leaf of the gradients takes the row path
    (`adaptive_tx.sparse.apply_rows`): the same `apply_rule` on the gathered rows of its statistics,
    scattered back, with lazy semantics for the untouched rows (see `adaptive_tx.sparse`).

    Each statistic is kept as its storage says (`adaptive_tx.state_precision`): a params-shaped
    tree of arrays, or a container of params-shaped trees (8-bit ``codes`` and ``scales``,
    factored ``row`` and ``col`` means). Stochastic rounding draws its bits from the key
    ``fold_in(fold_in(key(0), count), leaf index)`` (then the statistic's index and the storage's
    seed; `adaptive_tx.counter_bits.fold_in`, a cheap hash): deterministic, and the same
    however the arrays are sharded. The leaves' keys are run-time values
    (`adaptive_tx.counter_bits.leaf_keys`), so leaves of one shape compile to one kernel.

    Args:
      rule: the per-coordinate rule.
      state_type: the `NamedTuple` holding the state; its first field is ``count``.
      stat_dtypes: the storage of each statistic: None (the parameter's dtype), a float dtype, or
        any spec `adaptive_tx.state_precision.storage` accepts.
      hyperparams: a `NamedTuple` of the numbers the rule was built from, kept in the state
        (None: the state has no ``packed_hyperparams`` field).
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
    if rule.gives_params and not rule.reads_params:
        raise ValueError(
            "dense_transformation: a rule with gives_params=True must also set reads_params=True "
            "(its update is the new parameter minus the parameter it reads)"
        )
    storages = tuple(state_precision.storage(spec) for spec in stat_dtypes)
    per_block = any(storage.reads_stored for storage in storages)
    where = state_type.__name__.removesuffix("State")
    num_stats = len(rule.initial)
    # One trace per distinct leaf shape and dtype, not per leaf: XLA inlines the calls.
    apply_to_leaf = jax.jit(functools.partial(apply_rule, rule, storages=storages))

    def make_state(count, stats):
        if hyperparams is None:
            return state_type(count, *stats)
        return state_type(count, *stats, packed_hyperparams=store_hyperparams(hyperparams))

    def init_fn(params):
        _validate.check_floating_params(where, params)
        leaves, treedef = jax.tree.flatten(params)
        stats = [
            state_precision.join(
                [s.init(_stat_like(p, stat_shape), value) for p in leaves], treedef, s.container
            )
            for value, s in zip(rule.initial, storages)
        ]
        return make_state(jnp.zeros([], jnp.int32), stats)

    def update_fn(updates, state, params=None):
        if rule.reads_params and params is None:
            raise ValueError(f"{where} reads the params: call update(updates, state, params)")
        sparse.check_rows(where, updates)
        stat_trees = tuple(state[1 : 1 + num_stats])
        for stats in stat_trees:
            state_precision.check_matches(
                where, sparse.shape_view(updates), stats, per_block, stat_shape
            )
        count = optax.safe_increment(state.count)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(updates, sparse.is_row_sparse)
        paths = [jax.tree_util.keystr(path) for path, _ in with_paths]
        leaves = [leaf for _, leaf in with_paths]
        stat_leaves = [state_precision.split(stats, treedef) for stats in stat_trees]
        if rule.reads_params:
            _validate.check_tree_matches(where, sparse.shape_view(updates), params)
            param_leaves = treedef.flatten_up_to(params)
        else:
            param_leaves = [None] * len(leaves)
        if all(isinstance(s, state_precision.Cast) for s in storages):
            leaf_keys = [None] * len(leaves)  # rounded to nearest: no random bits to draw
        else:
            step_key = counter_bits.fold_in(jax.random.key(0), count)
            leaf_keys = counter_bits.leaf_keys(step_key, len(leaves))
        new_leaves, new_stat_leaves = [], []
        for index, (g, *stats) in enumerate(zip(leaves, *stat_leaves)):
            step = functools.partial(apply_to_leaf, t=count, key=leaf_keys[index])
            if rule.reads_params:
                step = functools.partial(step, param=param_leaves[index])
            try:
                if sparse.is_row_sparse(g):
                    for storage, stored in zip(storages, stats):
                        state_precision.check_row_sparse(where, paths[index], storage, stored)
                    update, new_stats = _apply_rows(step, g, tuple(stats), param_leaves[index])
                else:
                    update, new_stats = step(g, tuple(stats))
            except ComplexToRealError as error:
                raise TypeError(error.message(where, paths[index] or "<root>")) from None
            new_leaves.append(update)
            new_stat_leaves.append(new_stats)
        new_updates = treedef.unflatten(new_leaves)
        new_stat_trees = [
            state_precision.join([stats[i] for stats in new_stat_leaves], treedef, s.container)
            for i, s in enumerate(storages)
        ]
        chex.assert_trees_all_equal_shapes(
            sparse.shape_view(new_updates), sparse.shape_view(updates)
        )
        return new_updates, make_state(count, new_stat_trees)

    return optax.GradientTransformation(init_fn, update_fn)


def real_only(
    tx: optax.GradientTransformation, where: str, hint: str
) -> optax.GradientTransformation:
    """`tx`, refusing complex parameters at ``init`` and complex gradients at ``update``.

    For rules that are not defined on complex numbers (their optax twins' arithmetic gives a
    complex statistic or a step that means nothing there). `hint` says what to do instead.

    Example:
      >>> tx = real_only(optax.identity(), "identity", "split the parts")
      >>> tx.update(jnp.ones(1, jnp.complex64), tx.init(jnp.zeros(1)))
      Traceback (most recent call last):
      ...
      TypeError: identity: gradient <root> is complex (complex64); split the parts
    """

    def init_fn(params):
        _validate.check_real_params(where, params, hint)
        return tx.init(params)

    def update_fn(updates, state, params=None):
        for path, leaf in jax.tree_util.tree_flatten_with_path(updates, sparse.is_row_sparse)[0]:
            values = leaf.values if sparse.is_row_sparse(leaf) else leaf
            if jnp.iscomplexobj(values):
                raise TypeError(
                    f"{where}: gradient {jax.tree_util.keystr(path) or '<root>'} is complex "
                    f"({jnp.result_type(values)}); {hint}"
                )
        return tx.update(updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)
