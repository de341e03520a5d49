r"""Moving from optax: an optax optimizer state as the state of the adaptive_tx equivalent.

A checkpoint written by an optax training run restores into optax's state classes
(``ScaleByAdamState``, ``EmptyState``, ...), not into this library's, so ``orbax`` cannot restore
it into an adaptive_tx state directly. `from_optax_state` converts it: restore the checkpoint as
optax's state (``tx_optax.init(params)`` as the target), convert, and continue training with the
adaptive_tx twin of the optimizer; the run continues as the optax run would have.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import state_precision
from adaptive_tx.averaging import ScheduleFreeState
from adaptive_tx.cover_set import CoverArray
from adaptive_tx.factored import FactoredArray
from adaptive_tx.layerwise import ScaleByNovogradState
from adaptive_tx.learning_rate import ScaleByLearningRateState, ScaleByScheduledLearningRateState
from adaptive_tx.weight_decay import AddDecoupledWeightDecayState

# optax states that hold step counts of wrappers or schedules, not of an adaptive method.
_WRAPPER_COUNTS = ("InjectStatefulHyperparamsState", "ScaleByScheduleState", "WeightDecaySchedule")


# Statistics of ours that optax recomputes within a step (ADOPT's look-ahead reads the clipped
# gradient of the same step): their initial values are kept.
_RECOMPUTED = ("last_step",)


def _is_state(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _states(tree: Any) -> list[Any]:
    """Every NamedTuple state in `tree`, outermost first."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop(0)
        if _is_state(node):
            found.append(node)
        if isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
    return found


def _one(theirs: Any, predicate, what: str) -> Any:
    matches = [node for node in _states(theirs) if predicate(node)]
    if len(matches) != 1:
        raise ValueError(
            f"from_optax_state: cannot convert {what}: the optax state has {len(matches)} "
            "matching entries, expected 1; pass the state of the optax optimizer of the same "
            "name and arguments (e.g. optax.adamw(...) for adaptive_tx.adamw(...))"
        )
    return matches[0]


def _field(theirs: Any, name: str, what: str) -> Any:
    return getattr(_one(theirs, lambda s: name in s._fields, f"{what} ({name!r})"), name)


def _count(theirs: Any) -> jax.Array:
    """The adaptive method's step count: its own, else a schedule's or injector's, else 0."""
    counts = [s.count for s in _states(theirs) if "count" in s._fields]
    own = [
        s.count
        for s in _states(theirs)
        if "count" in s._fields and type(s).__name__ not in _WRAPPER_COUNTS
    ]
    own += [s.t for s in _states(theirs) if type(s).__name__ == "ScaleByAdanState"]
    counts = own or counts
    return jnp.asarray(counts[0] if counts else 0, jnp.int32)


def _like(value: Any, template: Any, what: str) -> Any:
    """`value` with `template`'s tree structure, shapes and dtypes, or a ValueError naming what."""
    leaves = jax.tree.leaves(template, is_leaf=state_precision.is_stored)
    stored = [t for t in leaves if state_precision.is_stored(t)]
    if stored:
        raise ValueError(
            f"from_optax_state: cannot convert {what} into {type(stored[0]).__name__} storage; "
            "convert into a plain-dtype state (mu_dtype / nu_dtype None or a float dtype)"
        )
    if jax.tree.structure(value) != jax.tree.structure(template):
        raise ValueError(
            f"from_optax_state: cannot convert {what}: the optax state's tree "
            f"{jax.tree.structure(value)} is not the parameters' {jax.tree.structure(template)}"
        )

    def cast(v, t):
        if jnp.shape(v) != jnp.shape(t):
            raise ValueError(
                f"from_optax_state: cannot convert {what}: shape {jnp.shape(v)} in the optax "
                f"state, {jnp.shape(t)} here"
            )
        return jnp.asarray(v).astype(t.dtype)

    return jax.tree.map(cast, value, template)


def _factored(theirs: Any, template: FactoredArray) -> FactoredArray:
    """optax's adafactor ``v_row`` / ``v_col`` / ``v`` as a `FactoredArray` of trees."""
    state = _one(theirs, lambda s: {"v_row", "v_col", "v"} <= set(s._fields), "adafactor's nu")

    def leaf(row, col, v_row, v_col, v):
        if not FactoredArray(row, col).factored:  # kept whole; col is a placeholder
            return jnp.reshape(v, row.shape).astype(row.dtype), col
        return (
            jnp.reshape(v_row, row.shape).astype(row.dtype),
            jnp.reshape(v_col, col.shape).astype(col.dtype),
        )

    pairs = jax.tree.map(leaf, template.row, template.col, state.v_row, state.v_col, state.v)
    is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
    return FactoredArray(
        jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair),
        jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair),
    )


def _cover(theirs: Any, template: CoverArray) -> CoverArray:
    """optax's sm3 ``mu`` (a list of per-axis vectors per leaf) as a `CoverArray` of trees."""
    lists = _field(theirs, "mu", "sm3's mu")

    def leaf(vectors, *kept):
        kept = CoverArray(*kept)
        used = [m for m in kept if jnp.ndim(m) == jnp.ndim(kept.axis0)] if kept.covered else []
        if len(vectors) != max(len(used), 1):
            raise ValueError(
                f"from_optax_state: cannot convert sm3's mu: {len(vectors)} vectors in the optax "
                f"state for a leaf of shape {kept.shape}"
            )
        new = [jnp.reshape(v, m.shape).astype(m.dtype) for v, m in zip(vectors, used or kept)]
        return tuple(new) + tuple(kept)[len(new) :]

    is_list = lambda x: isinstance(x, list)  # noqa: E731
    parts = jax.tree.map(leaf, lists, *template, is_leaf=is_list)
    is_parts = lambda x: isinstance(x, tuple) and not hasattr(x, "_fields")  # noqa: E731
    return CoverArray(
        *(jax.tree.map(lambda p, i=i: p[i], parts, is_leaf=is_parts) for i in range(len(template)))
    )


def _adaptive(node: Any, theirs: Any) -> Any:
    """One of this library's adaptive states, its statistics found by name in optax's state."""
    what = type(node).__name__
    values = {}
    for name, template in zip(node._fields, node):
        if name == "count":
            values[name] = _count(theirs)
        elif template is None or name == "packed_hyperparams":
            values[name] = template
        elif name in _RECOMPUTED:  # overwritten by the next step before it is read
            values[name] = template
        elif isinstance(template, FactoredArray):
            values[name] = _factored(theirs, template)
        elif isinstance(template, CoverArray):
            values[name] = _cover(theirs, template)
        else:
            values[name] = _like(_field(theirs, name, what), template, f"{what}.{name}")
    return type(node)(**values)


def _convert(node: Any, theirs: Any) -> Any:
    """`node` (a part of our initial state) with the values of `theirs` (optax's state)."""
    if isinstance(node, (ScaleByLearningRateState, optax.EmptyState)):
        return node
    if isinstance(node, ScaleByScheduledLearningRateState):
        schedule = _one(
            theirs, lambda s: type(s).__name__ == "ScaleByScheduleState", "the learning rate"
        )
        return node._replace(schedule_count=jnp.asarray(schedule.count, jnp.int32))
    if isinstance(node, AddDecoupledWeightDecayState):
        schedule = _one(
            theirs, lambda s: type(s).__name__ == "WeightDecaySchedule", "the weight decay"
        )
        return node._replace(schedule_count=jnp.asarray(schedule.count, jnp.int32))
    if isinstance(node, ScaleByNovogradState):  # optax's fields; nu kept real here
        found = _one(theirs, lambda s: type(s).__name__ == "ScaleByNovogradState", "novograd")
        return ScaleByNovogradState(
            _count(theirs),
            _like(found.mu, node.mu, "ScaleByNovogradState.mu"),
            _like(jax.tree.map(jnp.real, found.nu), node.nu, "ScaleByNovogradState.nu"),
        )
    if isinstance(node, ScheduleFreeState):  # optax.contrib's fields; the base state inside
        found = _one(theirs, lambda s: type(s).__name__ == "ScheduleFreeState", "schedule_free")
        scalars = {
            name: _like(getattr(found, name), getattr(node, name), f"ScheduleFreeState.{name}")
            for name in ("b1", "weight_sum", "step_count", "max_lr", "z")
        }
        base = _convert(node.base_optimizer_state, found.base_optimizer_state)
        return ScheduleFreeState(base_optimizer_state=base, **scalars)
    if _is_state(node) and "packed_hyperparams" in node._fields:
        return _adaptive(node, theirs)
    if isinstance(node, optax.MaskedState):
        inner = _one(theirs, lambda s: isinstance(s, optax.MaskedState), "a masked state")
        return optax.MaskedState(_convert(node.inner_state, inner.inner_state))
    if isinstance(node, optax.InjectStatefulHyperparamsState):
        outer = _one(
            theirs,
            lambda s: isinstance(s, optax.InjectStatefulHyperparamsState),
            "inject_hyperparams' state",
        )
        return outer._replace(inner_state=_convert(node.inner_state, outer.inner_state))
    if _is_state(node) and type(node).__module__.startswith("optax"):
        found = _one(theirs, lambda s: type(s) is type(node), type(node).__name__)
        return _like(found, node, type(node).__name__)
    if isinstance(node, tuple) and not _is_state(node):
        return tuple(_convert(part, theirs) for part in node)
    raise ValueError(
        f"from_optax_state: cannot convert {type(node).__name__}: optax has no equivalent state "
        "(e.g. rowwise_adagrad, skip_nonfinite, 8-bit or factored moments of adam)"
    )


def _is_scheduled_rate(node: Any) -> bool:
    return isinstance(node, ScaleByScheduledLearningRateState)


def from_optax_state(
    tx: optax.GradientTransformation, params: optax.Params, optax_state: optax.OptState
) -> optax.OptState:
    r"""The state of `tx` (an adaptive_tx optimizer) that continues from an optax optimizer state.

    ``optax_state`` is the state of the optax optimizer that `tx` reproduces (``optax.adam(...)``
    for ``adaptive_tx.adam(...)`` with the same arguments; also under
    ``optax.inject_hyperparams``), for example restored from an orbax checkpoint with
    ``optax_tx.init(params)`` as the target. The moments, accumulators and step counts are taken
    from it by their names in optax's state (``mu``, ``nu``, ``nu_max``, ``sum_of_squares``,
    ``count``; adafactor's ``v_row``, ``v_col``, ``v``), the rest (packed hyperparameters, the
    rate a schedule applied at the last step) is rebuilt, so that the next ``tx.update`` gives the
    update the optax optimizer would have given. Supported: adagrad, rmsprop, adam, adamw, nadam,
    nadamw, amsgrad, adamax, adamaxw, radam, adafactor, adan (its count ``t``),
    ``optax.contrib``'s adopt, ademamix and schedule_free_adamw (its ``z`` and averaging weights,
    the base state inside), sm3 (its per-axis ``mu``), novograd, with any of their options and
    schedules.

    Where optax's state keeps no step count (adagrad, rmsprop without bias correction, with a
    constant rate) the count is 0: those methods' arithmetic does not use it.

    Args:
      tx: the adaptive_tx optimizer (its statistics kept as plain arrays: ``mu_dtype`` /
        ``nu_dtype`` None or a float dtype).
      params: the parameters (shapes and dtypes; the values are used for a weight decay's
        recomputation of the last rate only).
      optax_state: the optax optimizer's state.

    Returns:
      A state of `tx`, with the statistics cast to the dtypes `tx.init(params)` gives.

    Raises:
      ValueError: naming what cannot be converted: a state optax has no equivalent of
        (``rowwise_adagrad``, ``skip_nonfinite``), 8-bit or factored storage of Adam's moments, an
        optax state of another optimizer or other shapes.

    Example:
      >>> import jax.numpy as jnp, optax, adaptive_tx as atx
      >>> params, g = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
      >>> theirs = optax.adam(0.1)
      >>> updates, state = theirs.update(g, theirs.init(params))
      >>> ours = atx.adam(0.1)
      >>> state = atx.from_optax_state(ours, params, state)
      >>> ours.update(g, state)[0], theirs.update(g, theirs.update(g, theirs.init(params))[1])[0]
      (Array([-0.1,  0.1], dtype=float32), Array([-0.1,  0.1], dtype=float32))
    """
    template = tx.init(params)
    converted = _convert(template, optax_state)
    if not any(_is_scheduled_rate(s) for s in _states(converted)):
        return converted
    # The rate a schedule applied at the last step: one step of tx from a step earlier.
    earlier = jax.tree.map(
        lambda s: s._replace(schedule_count=jnp.maximum(s.schedule_count - 1, 0))
        if _is_scheduled_rate(s)
        else s,
        converted,
        is_leaf=_is_scheduled_rate,
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    _, after = tx.update(zeros, earlier, params)

    def rate(ours, probe, initial):
        if not _is_scheduled_rate(ours):
            return ours
        return ours._replace(rate=jnp.where(ours.schedule_count > 0, probe.rate, initial.rate))

    return jax.tree.map(rate, converted, after, template, is_leaf=_is_scheduled_rate)
