r"""Reliability guards: skip steps that are not finite, and check a restored optimizer state.

`skip_nonfinite` wraps any transformation so that one NaN batch (or one overflowing step) costs a
step, not the run: the bad step changes nothing but the guard's counters. `check_restored_state`
turns a checkpoint restored into the wrong layout (no target, another ``mu_dtype``) into a readable
error before it reaches ``update``.

Both look at pytree leaves only (``jax.tree.leaves``), so they apply to any state or update tree:
chains, masks, injected hyperparameters, PRNG keys. Integer and boolean leaves (step counters, row
indices, quantized codes) cannot hold NaN or Inf and are neither tested nor zeroed.

To check when row-sparse and quantized states land:

* row-sparse updates given as (indices, values) leaves: the guard zeroes the values and keeps the
  indices, which is a no-op only if the sparse apply *adds* rows (a scatter-set of zero rows would
  erase them); an out-of-range index is finite, so the guard cannot see it (validate it there).
* quantized states: integer codes are not tested; only their floating scales are. If decoding can
  give Inf/NaN from finite codes and scales, the guard misses it (test the decoded values).
* a state may hold infinite floats on purpose (a running minimum starting at +inf, in a
  transformation of another library): the state check only rejects coordinates that *become* NaN or Inf.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate


class SkipNonfiniteState(NamedTuple):
    """State of `skip_nonfinite`.

    Attributes:
      skipped: int32 scalar, the number of steps skipped so far (saturating at the int32 maximum).
      consecutive_skipped: int32 scalar, the number of steps skipped since the last good step
        (0 after a good step; saturating).
      halted: bool scalar, set when ``consecutive_skipped`` reaches ``max_consecutive_errors``, and
        never cleared (sticky): the run needs attention. Always False without a limit.
      inner_state: the wrapped transformation's state, as of the last good step.

    Example:
      >>> import jax.numpy as jnp, adaptive_tx as atx
      >>> tx = skip_nonfinite(atx.adam(0.1))
      >>> updates, state = tx.update(jnp.array([jnp.nan]), tx.init(jnp.zeros(1)))
      >>> updates, state.skipped, state.halted
      (Array([0.], dtype=float32), Array(1, dtype=int32), Array(False, dtype=bool))
    """

    skipped: jax.Array
    consecutive_skipped: jax.Array
    halted: jax.Array
    inner_state: optax.OptState


def _is_inexact(leaf: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


# Finiteness flags are reduced a few arrays at a time: one reduction per array costs XLA a kernel
# (and its compile time) per array, one reduction over many arrays makes a kernel whose compile
# time grows faster than its size. Four arrays of one shape per reduction compiled fastest.
_ARRAYS_PER_REDUCTION = 4


def _all_true(flags: list[jax.Array]) -> jax.Array:
    """A bool scalar: True when every boolean array of `flags` is all True.

    The arrays are grouped by shape, combined elementwise a few at a time and reduced once per
    group of `_ARRAYS_PER_REDUCTION`, so the number of reductions does not follow the number of
    leaves.
    """
    by_shape: dict[tuple[int, ...], list[jax.Array]] = {}
    for flag in flags:
        by_shape.setdefault(jnp.shape(flag), []).append(flag)
    reduced = [
        jnp.all(functools.reduce(jnp.logical_and, same[i : i + _ARRAYS_PER_REDUCTION]))
        for same in by_shape.values()
        for i in range(0, len(same), _ARRAYS_PER_REDUCTION)
    ]
    return jnp.all(jnp.stack(reduced)) if reduced else jnp.array(True)


def _finite_flags(*trees: Any) -> list[jax.Array]:
    return [jnp.isfinite(x) for x in jax.tree.leaves(trees) if _is_inexact(x)]


def _stays_finite_flags(old: Any, new: Any) -> list[jax.Array]:
    return [
        jnp.isfinite(n) | ~jnp.isfinite(o)
        for o, n in zip(jax.tree.leaves(old), jax.tree.leaves(new))
        if _is_inexact(n)
    ]


def all_finite(*trees: chex.ArrayTree) -> jax.Array:
    """A bool scalar: True when every floating (or complex) leaf of `trees` is finite.

    Integer and boolean leaves are skipped; with no floating leaf at all the answer is True.

    Example:
      >>> all_finite({'w': jnp.ones(2), 'step': jnp.int32(3)}, [jnp.array([1.0, jnp.inf])])
      Array(False, dtype=bool)
    """
    return _all_true(_finite_flags(*trees))


def stays_finite(old: chex.ArrayTree, new: chex.ArrayTree) -> jax.Array:
    """A bool scalar: True when no floating leaf of `new` is non-finite where `old` was finite.

    A state may hold infinite values on purpose (a running minimum that starts at +inf; no state
    of this library does); only coordinates that *become* NaN or Inf make a step bad.

    Example:
      >>> old = {'m': jnp.array([1.0, 2.0]), 'best': jnp.array(jnp.inf)}
      >>> stays_finite(old, {'m': jnp.array([3.0, 4.0]), 'best': jnp.array(jnp.inf)})
      Array(True, dtype=bool)
      >>> stays_finite(old, {'m': jnp.array([3.0, jnp.nan]), 'best': jnp.array(jnp.inf)})
      Array(False, dtype=bool)
    """
    return _all_true(_stays_finite_flags(old, new))


def _keep(new_updates: Any, new_inner: Any, old_inner: Any) -> tuple[Any, Any]:
    """The step is good: its updates and its new inner state."""
    del old_inner
    return new_updates, new_inner


def _skip(new_updates: Any, new_inner: Any, old_inner: Any) -> tuple[Any, Any]:
    """The step is bad: zero updates (integer leaves, e.g. row indices, kept) and the old state."""
    del new_inner
    zeros = jax.tree.map(lambda u: jnp.zeros_like(u) if _is_inexact(u) else u, new_updates)
    return zeros, old_inner


def skip_nonfinite(
    inner: optax.GradientTransformation,
    max_consecutive_errors: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Skip every step whose gradients, updates or new state hold a NaN or an Inf.

    With :math:`(u'_t, s'_t) = \mathrm{inner.update}(g_t, s_{t-1})` and
    :math:`\mathrm{ok}_t` = "every floating leaf of :math:`g_t` and :math:`u'_t` is finite, and no
    coordinate of :math:`s'_t` is NaN or Inf where :math:`s_{t-1}` was finite" (a state may hold an
    infinite value on purpose, e.g. a running minimum that starts at +inf):

    .. math::

       (u_t, s_t) = (u'_t, s'_t) \text{ if } \mathrm{ok}_t \text{ else } (0, s_{t-1}),

    so a bad step leaves the parameters (``optax.apply_updates`` adds zeros) and the inner state
    (step counter, moments, schedule position) exactly as they were: a run with bad batches equals,
    bitwise, the run without them. Checking the new state as well as the updates catches overflow
    that the updates hide: a gradient of 1e30 in float32 squares to Inf, and Adam's step
    :math:`m/\sqrt{v}` is then a finite 0 while :math:`v = \infty` would freeze every later step.

    The state counts skipped steps, in total and since the last good step (reset to 0 by a good
    step). When ``consecutive_skipped`` reaches ``max_consecutive_errors``:

    * inside ``jax.jit`` (or any transformation, where values are tracers), the state's ``halted``
      flag is set and stays set; the guard keeps skipping bad steps, so the parameters never become
      non-finite. Read the flag outside jit, e.g. ``optax.tree.get(opt_state, 'halted')``, and stop.
    * outside jit (concrete values), ``update`` raises ``FloatingPointError`` instead of returning a
      halted state; the state the caller holds is still the one before the failing step.

    A step is all or nothing: one bad leaf skips the whole step, as in mixed-precision training,
    where a step whose scaled gradients overflow is skipped (Micikevicius et al., "Mixed Precision
    Training", ICLR 2018, https://arxiv.org/abs/1710.03740). Unlike ``optax.apply_if_finite``, the
    guard never lets a non-finite update through, also tests the updates and the new state, and
    keeps the consecutive count equal to the current streak.

    The choice is one ``lax.cond`` on the step's flag (not a select per leaf), and the flag reduces
    a few arrays at a time, so compile time grows linearly with the number of leaves, within 2x of
    ``optax.apply_if_finite``'s (``benchmarks/guard_compile.py``).

    Args:
      inner: the transformation to guard (an alias, a chain, ...).
      max_consecutive_errors: an integer >= 1, or None for no limit (the flag never rises).

    Returns:
      An `optax.GradientTransformationExtraArgs` whose state is `SkipNonfiniteState`; extra
      arguments of ``update`` are passed on to ``inner``.

    Example:
      >>> import jax.numpy as jnp
      >>> from adaptive_tx import adam
      >>> tx = skip_nonfinite(adam(0.1), max_consecutive_errors=3)
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([jnp.nan, 1.0]), state)
      >>> updates, state.skipped, state.consecutive_skipped
      (Array([0., 0.], dtype=float32), Array(1, dtype=int32), Array(1, dtype=int32))
      >>> updates, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> updates.round(4), state.skipped, state.consecutive_skipped
      (Array([-0.1,  0.1], dtype=float32), Array(1, dtype=int32), Array(0, dtype=int32))
    """
    if max_consecutive_errors is not None:
        _validate.check_positive_int("max_consecutive_errors", max_consecutive_errors)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        zero = jnp.zeros([], jnp.int32)
        return SkipNonfiniteState(zero, zero, jnp.array(False), inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        good = _all_true(
            _finite_flags(updates, new_updates) + _stays_finite_flags(state.inner_state, new_inner)
        )
        # One branch on the global flag, not one select per leaf: XLA copies the flag's
        # reductions over every leaf into each select, and compile time grew quadratically.
        new_updates, new_inner = jax.lax.cond(
            good, _keep, _skip, new_updates, new_inner, state.inner_state
        )
        consecutive = jnp.where(good, 0, optax.safe_increment(state.consecutive_skipped))
        halted = state.halted
        if max_consecutive_errors is not None:
            halted = halted | (consecutive >= max_consecutive_errors)
        new_state = SkipNonfiniteState(
            skipped=jnp.where(good, state.skipped, optax.safe_increment(state.skipped)),
            consecutive_skipped=consecutive,
            halted=halted,
            inner_state=new_inner,
        )
        if not isinstance(halted, jax.core.Tracer) and bool(halted):
            raise FloatingPointError(
                f"skip_nonfinite: {int(consecutive)} consecutive steps had non-finite gradients, "
                f"updates or optimizer state (max_consecutive_errors={max_consecutive_errors}); "
                "the state given to update still holds the inner state of the last good step"
            )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def check_restored_state(
    tx: optax.GradientTransformation, params: optax.Params, state: optax.OptState
) -> optax.OptState:
    """Returns `state` if it has the tree, shapes and dtypes that ``tx.init(params)`` would have.

    Call it on an optimizer state restored from a checkpoint, before the first ``update``: a state
    restored without a target (plain dicts and lists instead of the state `NamedTuple`s), or one
    written by an optimizer with other state dtypes (``mu_dtype``, ``nu_dtype``) or other
    parameters, would otherwise fail deep inside ``update`` or, worse, run on silently. Nothing is
    computed: the expected layout comes from ``jax.eval_shape(tx.init, params)``.

    Args:
      tx: the transformation that will consume the state.
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``\\ s).
      state: the restored state.

    Returns:
      `state`, unchanged.

    Raises:
      ValueError: the tree structure or a leaf's shape differs (the message names the leaf).
      TypeError: a leaf's dtype differs (the message names the leaf and both dtypes).

    Example:
      >>> import jax.numpy as jnp
      >>> from adaptive_tx import adam
      >>> params = {'w': jnp.zeros(3)}
      >>> state = adam(0.1, mu_dtype=jnp.bfloat16).init(params)
      >>> check_restored_state(adam(0.1), params, state)
      Traceback (most recent call last):
      ...
      TypeError: check_restored_state: state leaf [0].mu['w'] has dtype bfloat16 but
      tx.init(params) gives float32 (was the state written by an optimizer with other state
      dtypes, e.g. mu_dtype?)
    """
    _validate.check_layout_matches("check_restored_state", jax.eval_shape(tx.init, params), state)
    return state
