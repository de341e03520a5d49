"""What the torch and keras preset tests share: the runner and the per-coordinate scale check."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_tx.delta import ScaleByAdadeltaState
from adaptive_tx.diagnostics import effective_learning_rate
from adaptive_tx.ema_of_squares import ScaleByEmaOfSquaresState
from adaptive_tx.sign import ScaleByLionState, ScaleByRpropState
from adaptive_tx.sum_of_squares import ScaleBySumOfSquaresState
from tests.cases import gradient_stream, make_params, max_rel_diff, run

STEPS = 100
# Relative error with a floor of 1 (parameters start ~N(0, 1)): float32 rounding accumulates at
# the scale of the trajectory, so a coordinate passing near zero is held to 1e-4 absolute.
TOL, FLOOR = 1e-4, 1.0


def factoring_problem(steps: int = STEPS, seed: int = 2):
    """make_params and gradient_stream plus the shapes where Adafactor's factoring conventions
    differ: a (5, 2, 3) stack (keras and torch factor its last two axes, optax its two largest, 0
    and 2) and a (1, 4) row; their gradients are exactly zero on every fifth step and x100 from
    the middle on, like the rest of the stream."""
    rng = np.random.default_rng(seed)
    shapes = {"stack": (5, 2, 3), "row": (1, 4)}
    params = make_params() | {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = gradient_stream(steps)
    for t, g in enumerate(grads):
        scale = 0.0 if t % 5 == 4 else 100.0 if t >= steps // 2 else 1.0
        g.update({k: (scale * rng.normal(size=s)).astype(np.float32) for k, s in shapes.items()})
    return params, grads


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
    (which moved the parameters), and its state gives the effective learning rate."""
    ours, state = run_ours(tx, params, grads)
    # max_rel_diff skips NaNs (Python's max), so both trajectories must be finite.
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((ours, theirs)))
    assert max_rel_diff(jax.tree.map(lambda x: x[-1], theirs), params, FLOOR) > 1e-2
    assert max_rel_diff(ours, theirs, FLOOR) <= TOL
    final = jax.tree.map(lambda x: x[-1], ours)
    check_per_coordinate_scale(tx, state, final, grads[0], plain)


def check_per_coordinate_scale(tx, state, params, grad, plain: bool) -> None:
    """After one more step from `state`, `effective_learning_rate` reads the preset's rate from its
    state (params-shaped, finite, >= 0).

    For a plain chain (the adaptive scaling then the learning rate, nothing else) that step's
    update must be ``-rate * direction``, the direction being the gradient (Adagrad, RMSprop) or
    the stored first moment (Adam family without NAdam's look-ahead).
    """
    # Both jitted: RAdam's r_t cancels digits, so eager and compiled arithmetic differ by ~1e-4.
    before = state
    update, state = jax.jit(tx.update)(grad, state, params)
    rate = jax.jit(effective_learning_rate)(state)
    chex.assert_trees_all_equal_shapes(rate, params)
    assert all(bool(jnp.all(jnp.isfinite(r) & (r >= 0))) for r in jax.tree.leaves(rate))
    if not plain:
        return
    (adaptive,) = [s for s in jax.tree.leaves(state, is_leaf=_is_adaptive) if _is_adaptive(s)]
    gradient_rules = (ScaleBySumOfSquaresState, ScaleByEmaOfSquaresState)
    (previous,) = [s for s in jax.tree.leaves(before, is_leaf=_is_adaptive) if _is_adaptive(s)]
    if isinstance(adaptive, ScaleByAdadeltaState):  # sqrt(E[dx^2]_{t-1} + eps) g_t
        eps = previous.packed_hyperparams[1]
        direction = jax.tree.map(lambda e, g: jnp.sqrt(e + eps) * g, previous.e_x, grad)
    elif isinstance(adaptive, ScaleByLionState):  # sign(b1 m_{t-1} + (1 - b1) g_t)
        b1 = previous.packed_hyperparams[0]
        direction = jax.tree.map(lambda m, g: jnp.sign(b1 * m + (1 - b1) * g), previous.mu, grad)
    elif isinstance(adaptive, ScaleByRpropState):  # sign(g_t), 0 where the sign flipped
        direction = jax.tree.map(jnp.sign, adaptive.prev_updates)
    else:
        direction = grad if isinstance(adaptive, gradient_rules) else adaptive.mu
    expected = jax.tree.map(lambda d, r: -d * r, direction, rate)
    assert max_rel_diff(update, expected, floor=1e-12) <= 1e-5


def _is_adaptive(s) -> bool:
    return hasattr(s, "per_coordinate_scale")
