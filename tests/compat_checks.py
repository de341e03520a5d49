"""What the torch and keras preset tests share: the runner and the per-coordinate scale check."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_tx.ema_of_squares import ScaleByEmaOfSquaresState
from adaptive_tx.learning_rate import ScaleByLearningRateState
from adaptive_tx.sum_of_squares import ScaleBySumOfSquaresState
from tests.cases import max_rel_diff, run

STEPS = 100
# Relative error with a floor of 1 (parameters start ~N(0, 1)): float32 rounding accumulates at
# the scale of the trajectory, so a coordinate passing near zero is held to 1e-4 absolute.
TOL, FLOOR = 1e-4, 1.0


def row_id(row) -> str:
    """A test id: the optimizer and its settings other than the learning rate."""
    name, kwargs = row
    settings = ",".join(
        f"{k}={'sched' if callable(v) else v}"
        for k, v in kwargs.items()
        if k not in ("lr", "learning_rate")
    )
    return f"{name}({settings})"


def force_option(monkeypatch, module, primitive: str, option: str, value) -> None:
    """Makes `module`'s presets call `primitive` with ``option=value``, whatever they pass."""
    original = getattr(module, primitive)
    monkeypatch.setattr(module, primitive, lambda *a, **k: original(*a, **(k | {option: value})))


def stack(iterates):
    """A list of parameter trees as one tree of arrays with a leading step axis."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *iterates)


def run_ours(tx, params, grads):
    """Every iterate (stacked) and the final state of `tx`, one jitted step for all steps."""
    iterates, state, traces = run(tx, params, grads)
    assert traces == 1, "the jitted step recompiled across steps"
    return stack(iterates), state


def check_preset(tx, theirs, params, grads, plain: bool) -> None:
    """`tx` over the stream is within TOL of the framework's trajectory `theirs` at every step
    (which moved the parameters), and its state gives the per-coordinate scale."""
    ours, state = run_ours(tx, params, grads)
    assert max_rel_diff(jax.tree.map(lambda x: x[-1], theirs), params, FLOOR) > 1e-2
    assert max_rel_diff(ours, theirs, FLOOR) <= TOL
    final = jax.tree.map(lambda x: x[-1], ours)
    check_per_coordinate_scale(tx, state, final, grads[0], plain)


def _is_state(s) -> bool:
    return hasattr(s, "per_coordinate_scale") or isinstance(s, ScaleByLearningRateState)


def check_per_coordinate_scale(tx, state, params, grad, plain: bool) -> None:
    """After one more step from `state`, the preset's adaptive state gives its per-coordinate
    scale (params-shaped, finite, >= 0).

    For a plain chain (the adaptive scaling then the learning rate, nothing else) that step's
    update must be ``-learning_rate * direction * scale``, the direction being the gradient
    (Adagrad, RMSprop) or the stored first moment (Adam family without NAdam's look-ahead).
    """
    update, state = tx.update(grad, state, params)
    states = [s for s in jax.tree.leaves(state, is_leaf=_is_state) if _is_state(s)]
    adaptive = [s for s in states if hasattr(s, "per_coordinate_scale")]
    rates = [s for s in states if isinstance(s, ScaleByLearningRateState)]
    assert len(adaptive) == 1 and len(rates) == 1
    scale = adaptive[0].per_coordinate_scale()
    chex.assert_trees_all_equal_shapes(scale, params)
    assert all(bool(jnp.all(jnp.isfinite(s) & (s >= 0))) for s in jax.tree.leaves(scale))
    if not plain:
        return
    gradient_rules = (ScaleBySumOfSquaresState, ScaleByEmaOfSquaresState)
    direction = grad if isinstance(adaptive[0], gradient_rules) else adaptive[0].mu
    expected = jax.tree.map(lambda d, s: -rates[0].learning_rate * d * s, direction, scale)
    assert max_rel_diff(update, expected, floor=1e-12) <= 1e-5
