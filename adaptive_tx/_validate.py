"""Checks shared by every constructor and every update: one place for the wording of errors.

Hyperparameters are checked at construction when they are concrete numbers, as the arithmetic
will see them: a β that rounds to 1 in float32 is refused like β = 1, and an infinite learning
rate, ε or weight decay like a negative one. Under `optax.inject_hyperparams` they arrive as
arrays: concrete ones (an eager ``init``) are checked the same way; traced ones (inside
`jax.jit`) cannot raise, so each check *returns* the value with NaN in place of an out-of-range
one: every update of that step is then NaN, which `adaptive_tx.skip_nonfinite` skips and counts
(and which, unguarded, shows in the parameters instead of training on silently).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(value: Any) -> float | None:
    """The float value of a concrete scalar, or None for tracers, schedules and None."""
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    array = np.asarray(value)
    if array.ndim != 0:
        raise ValueError(f"expected a scalar hyperparameter, got an array of shape {array.shape}")
    return float(array)


def _guard_traced(value: Any, in_range: Any) -> Any:
    """`value`, or NaN where a traced `value` is out of range (`in_range(value)` False).

    Inside `jax.jit` a check cannot raise; a NaN hyperparameter makes every update of the step NaN,
    which `adaptive_tx.skip_nonfinite` skips and counts. Concrete values and schedules pass as
    they are (they were checked, or are checked where they are evaluated).
    """
    if not isinstance(value, jax.core.Tracer) or not jnp.issubdtype(value.dtype, jnp.inexact):
        return value
    return jnp.where(in_range(value), value, jnp.nan).astype(value.dtype)


def _check_finite(name: str, value: Any, number: float) -> None:
    if math.isinf(number):
        raise ValueError(
            f"{name} must be finite, got {name}={value!r} (an infinite {name} freezes or destroys "
            "every coordinate it touches)"
        )


def check_non_negative(name: str, value: Any, allow_inf: bool = False) -> Any:
    """Raises ValueError unless `value` is >= 0 and (unless `allow_inf`) finite.

    Returns `value` (a traced one with NaN if it is out of range, see the module docstring).
    """
    number = _concrete(value)
    if number is not None and not number >= 0.0:  # also catches NaN
        raise ValueError(f"{name} must be >= 0, got {name}={value!r}")
    if number is not None and not allow_inf:
        _check_finite(name, value, number)
    if allow_inf:
        return _guard_traced(value, lambda x: x >= 0)
    return _guard_traced(value, lambda x: (x >= 0) & jnp.isfinite(x))


def check_positive(name: str, value: Any) -> Any:
    """Raises ValueError unless `value` is finite and > 0 (tracers and schedules pass, guarded)."""
    number = _concrete(value)
    if number is not None and not number > 0.0:
        raise ValueError(f"{name} must be > 0, got {name}={value!r}")
    if number is not None:
        _check_finite(name, value, number)
    return _guard_traced(value, lambda x: (x > 0) & jnp.isfinite(x))


def check_non_positive(name: str, value: Any) -> Any:
    """Raises ValueError unless `value` is finite and <= 0 (tracers and schedules pass, guarded)."""
    number = _concrete(value)
    if number is not None and not number <= 0.0:  # also catches NaN
        raise ValueError(f"{name} must be <= 0, got {name}={value!r}")
    if number is not None:
        _check_finite(name, value, number)
    return _guard_traced(value, lambda x: (x <= 0) & jnp.isfinite(x))


def check_unit_interval(name: str, value: Any) -> Any:
    """Raises ValueError unless 0 <= `value` < 1 as the arithmetic sees it (a decay rate).

    The arithmetic is float32 (float64 under x64): a β that rounds to 1.0 there (``1 - 1e-9``) is
    refused like 1.0, since :math:`1-\\beta^t` would be 0. Returns `value` (a traced one with NaN
    if it is out of range, see the module docstring).
    """
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
    arithmetic = jnp.result_type(float)
    if number is not None and np.asarray(number, arithmetic) >= 1:
        raise ValueError(
            f"{name} must be below 1 as {np.dtype(arithmetic).name} sees it, got {name}={value!r}, "
            f"which rounds to 1.0 (the largest {np.dtype(arithmetic).name} below 1 is "
            f"{float(np.nextafter(np.asarray(1, arithmetic), 0))!r})"
        )
    return _guard_traced(value, lambda x: (x >= 0) & (x < 1))


def check_rectification_threshold(threshold: Any, b2: Any) -> Any:
    """Raises ValueError unless RAdam's `threshold` is finite and leaves :math:`r_t` real.

    :math:`r_t` is the root of :math:`(\\rho_t-4)(\\rho_t-2)/\\ldots`, negative for
    :math:`2 < \\rho_t < 4`; :math:`\\rho_t` grows from 1 to :math:`\\rho_\\infty = 2/(1-\\beta_2)-1`,
    so a threshold below 4 rectifies those steps (NaN) unless :math:`\\rho_\\infty \\le 2`.
    Returns `threshold` (a traced one with NaN if it is not finite).
    """
    number = _concrete(threshold)
    if number is not None and not math.isfinite(number):
        hint = "" if math.isnan(number) else (
            " (it would never use the adaptive step: for that, use optax.sgd with momentum)"
        )
        raise ValueError(f"threshold must be a finite number, got threshold={threshold!r}{hint}")
    b2_number = _concrete(b2)
    if number is not None and number < 4 and b2_number is not None:
        rho_inf = 2 / (1 - b2_number) - 1
        if rho_inf > 2:
            raise ValueError(
                f"threshold must be >= 4, got threshold={threshold!r}: rho_t grows from 1 to "
                f"rho_inf={rho_inf:.6g}, and r_t is the root of a negative number (NaN) for "
                "2 < rho_t < 4 (the paper, optax and torch use 5)"
            )
    return _guard_traced(threshold, jnp.isfinite)


def check_flag_needs(name: str, flag: Any, needed: str, value: Any) -> None:
    """Raises ValueError when option `name` is set but `needed` (its value `value`) is off."""
    if flag and value is None:
        raise ValueError(
            f"{name}={flag!r} needs {needed}: without it there is no momentum and {name} would be "
            f"ignored (set {needed}, e.g. {needed}=0.9, or drop {name})"
        )


def check_learning_rate(value: Any, name: str = "learning_rate") -> Any:
    """Raises ValueError for a negative or infinite constant learning rate (schedules are
    callables, they pass). Returns `value` (a traced one with NaN if it is out of range)."""
    if value is None:
        raise ValueError(f"{name} must be a non-negative number or a schedule, got None")
    return check_non_negative(name, value)


def check_state_dtype(dtype: Any, name: str = "state dtype") -> Any:
    """Returns the canonical floating dtype for state storage (None stays None: the params' dtype).

    Raises TypeError naming the argument for anything else (the storage names and objects of
    `adaptive_tx.state_precision` are resolved before this check).
    """
    if dtype is None:
        return None
    allowed = (
        "None, a floating dtype of 16 bits or more, 'bfloat16_sr', 'int8_blockwise', "
        "'float8_e4m3fn_blockwise', 'float8_e5m2_blockwise' or a storage object"
    )
    try:
        canonical = jax.dtypes.canonicalize_dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be {allowed}, got {name}={dtype!r}") from None
    if not jax.numpy.issubdtype(canonical, jax.numpy.inexact):
        raise TypeError(f"{name} must be {allowed}, got {name}={dtype!r}")
    if canonical.itemsize < 2:
        # A bare 8-bit (or narrower) float has no scale: second moments below its smallest
        # subnormal (2e-3 in float8_e4m3fn) would be stored as 0 and the step become m / eps.
        raise TypeError(
            f"{name}={canonical.name} keeps statistics without a scale: values below the "
            "dtype's smallest number would be stored as 0; use an 8-bit storage with per-block "
            "scales: 'float8_e4m3fn_blockwise', 'float8_e5m2_blockwise' or 'int8_blockwise'"
        )
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
