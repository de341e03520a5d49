"""Checks shared by every constructor and every update: one place for the wording of errors.

Hyperparameters are checked at construction when they are concrete numbers. Under
`optax.inject_hyperparams` inside `jax.jit` they arrive as tracers; those are left alone (their
values were checked when the injected state was built from concrete numbers).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _concrete(value: Any) -> float | None:
    """The float value of a concrete scalar, or None for tracers, schedules and None."""
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    array = np.asarray(value)
    if array.ndim != 0:
        raise ValueError(f"expected a scalar hyperparameter, got an array of shape {array.shape}")
    return float(array)


def check_non_negative(name: str, value: Any) -> None:
    """Raises ValueError unless `value` is >= 0 (tracers and schedules pass)."""
    number = _concrete(value)
    if number is not None and not number >= 0.0:  # also catches NaN
        raise ValueError(f"{name} must be >= 0, got {name}={value!r}")


def check_positive(name: str, value: Any) -> None:
    """Raises ValueError unless `value` is > 0 (tracers and schedules pass)."""
    number = _concrete(value)
    if number is not None and not number > 0.0:
        raise ValueError(f"{name} must be > 0, got {name}={value!r}")


def check_non_positive(name: str, value: Any) -> None:
    """Raises ValueError unless `value` is <= 0 (tracers and schedules pass)."""
    number = _concrete(value)
    if number is not None and not number <= 0.0:  # also catches NaN
        raise ValueError(f"{name} must be <= 0, got {name}={value!r}")


def check_unit_interval(name: str, value: Any) -> None:
    """Raises ValueError unless 0 <= `value` < 1 (a decay rate; tracers pass)."""
    number = _concrete(value)
    if number is not None and not 0.0 <= number < 1.0:
        hint = ""
        dtype = getattr(value, "dtype", None)
        if number == 1.0 and dtype is not None and jax.numpy.finfo(dtype).bits < 32:
            hint = (
                f" ({name} was rounded to 1 in {dtype}; optax.inject_hyperparams casts to the "
                "params' dtype unless given hyperparam_dtype=jnp.float32)"
            )
        raise ValueError(f"{name} must be in [0, 1), got {name}={value!r}{hint}")


def check_learning_rate(value: Any) -> None:
    """Raises ValueError for a negative constant learning rate (schedules are callables, they pass)."""
    if value is None:
        raise ValueError("learning_rate must be a non-negative number or a schedule, got None")
    check_non_negative("learning_rate", value)


def check_state_dtype(dtype: Any, name: str = "state dtype") -> Any:
    """Returns the canonical floating dtype for state storage (None stays None: the params' dtype).

    Raises TypeError naming the argument for anything else (the storage names and objects of
    `adaptive_tx.state_precision` are resolved before this check).
    """
    if dtype is None:
        return None
    allowed = "None, a floating dtype, 'bfloat16_sr', 'int8_blockwise' or a storage object"
    try:
        canonical = jax.dtypes.canonicalize_dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be {allowed}, got {name}={dtype!r}") from None
    if not jax.numpy.issubdtype(canonical, jax.numpy.inexact):
        raise TypeError(f"{name} must be {allowed}, got {name}={dtype!r}")
    return canonical


def check_tree_matches(
    where: str,
    updates: Any,
    stats: Any,
    shapes: bool = True,
    per_block: bool = False,
    stat_shape: Any = None,
) -> None:
    """Raises a readable ValueError when the gradient tree does not match the state's tree.

    Compares structure first, then (with `shapes`) the shape of every leaf (mapped by `stat_shape`
    when the statistics have their own shape, e.g. one per row), naming the first leaf that differs
    by its path. Runs at trace time (shapes are static), so a mismatch never reaches XLA. With
    `per_block`, a state leaf of size 1 along an axis (a statistic kept per block) matches any size
    there.
    """
    g_struct, s_struct = jax.tree.structure(updates), jax.tree.structure(stats)
    if g_struct != s_struct:
        raise ValueError(
            f"{where}: the gradient tree does not match the optimizer state (was init called with "
            f"these params?).\n  gradients: {g_struct}\n  state:     {s_struct}"
        )
    if not shapes:
        return
    fits = (lambda a, b: a in (b, 1)) if per_block else (lambda a, b: a == b)
    g_leaves = jax.tree_util.tree_flatten_with_path(updates)[0]
    for (path, g), s in zip(g_leaves, jax.tree.leaves(stats)):
        g_shape, s_shape = np.shape(g), np.shape(s)
        expected = g_shape if stat_shape is None else tuple(stat_shape(g_shape))
        if len(expected) != len(s_shape) or not all(map(fits, s_shape, expected)):
            raise ValueError(
                f"{where}: gradient leaf {jax.tree_util.keystr(path) or '<root>'} has shape "
                f"{g_shape} but the optimizer state holds shape {s_shape}"
                + ("" if stat_shape is None else f" (expected {expected} for this gradient)")
            )


def check_floating_params(where: str, params: Any) -> None:
    """Raises TypeError naming the first leaf that is not a floating (or complex) array.

    An integer or boolean leaf would get integer statistics and silently wrong updates.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not jax.numpy.issubdtype(jax.numpy.result_type(leaf), jax.numpy.inexact):
            raise TypeError(
                f"{where}: parameter {jax.tree_util.keystr(path) or '<root>'} has dtype "
                f"{jax.numpy.result_type(leaf)}; adaptive methods need floating parameters "
                "(exclude the others, e.g. with optax.masked or nnx.Optimizer(wrt=nnx.Param))"
            )


def check_real_params(where: str, params: Any, hint: str) -> None:
    """Raises TypeError naming the first complex leaf, for conventions defined on real numbers only.

    `hint` says how to get the intended behaviour (e.g. split the real and imaginary parts).
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jax.numpy.iscomplexobj(leaf):
            raise TypeError(
                f"{where}: parameter {jax.tree_util.keystr(path) or '<root>'} is complex "
                f"({jax.numpy.result_type(leaf)}); {hint}"
            )


def check_positive_int(name: str, value: Any) -> None:
    """Raises ValueError unless `value` is an integer >= 1 (a count; booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")


def check_layout_matches(where: str, expected: Any, state: Any) -> None:
    """Raises unless `state` has the tree, leaf shapes and leaf dtypes of `expected`.

    `expected` is typically ``jax.eval_shape(tx.init, params)``. A different tree structure or shape
    is a ValueError, a different dtype a TypeError; each names the first leaf that differs.
    """
    e_struct, s_struct = jax.tree.structure(expected), jax.tree.structure(state)
    if e_struct != s_struct:
        raise ValueError(
            f"{where}: the state's tree does not match tx.init(params) (restore a checkpoint with "
            f"the target jax.eval_shape(tx.init, params)).\n  expected: {e_struct}\n  state:    "
            f"{s_struct}"
        )
    for (path, e), s in zip(
        jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(state)
    ):
        leaf = jax.tree_util.keystr(path) or "<root>"
        if np.shape(s) != e.shape:
            raise ValueError(
                f"{where}: state leaf {leaf} has shape {np.shape(s)} but tx.init(params) gives "
                f"{e.shape}"
            )
        if jax.numpy.result_type(s) != e.dtype:
            raise TypeError(
                f"{where}: state leaf {leaf} has dtype {jax.numpy.result_type(s)} but "
                f"tx.init(params) gives {e.dtype} (was the state written by an optimizer with "
                "other state dtypes, e.g. mu_dtype?)"
            )
