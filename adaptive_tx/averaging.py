r"""Schedule-free learning: the parameters interpolate between an average and the raw iterates.

Schedule-free methods (Defazio et al. 2024) replace the momentum and the decaying learning-rate
schedule of a base optimizer by two per-coordinate sequences: :math:`z`, the base optimizer's raw
iterates, and :math:`x`, a weighted average of them, the point to evaluate the model at. Gradients
are taken at the interpolation :math:`y = \beta_1 x + (1-\beta_1) z`, which is what the parameters
hold during training. Only :math:`z` is kept in the state: :math:`x` is recomputed from :math:`y`
and :math:`z` (`schedule_free_eval_params`).

The interpolation is a `adaptive_tx.rule.Rule` whose statistic is :math:`z`: it reads the
parameter :math:`y_{t-1}` and the previous :math:`z_{t-1}` and gives the new parameter :math:`y_t`
(``reads_params``, ``reads_previous`` and ``gives_params``, like FTRL-Proximal), so a row-sparse
leaf runs it on its looked-up rows only. The averaging weight :math:`c_t` is one number per step,
made from the learning rates seen so far; the rule is built with it at each step.

`schedule_free_adamw` (optax.contrib's alias) is `schedule_free` over AdamW's step without momentum.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptive_tx import _validate, sparse
from adaptive_tx.ema_of_squares import scale_by_ema_of_squares
from adaptive_tx.learning_rate import scale_by_learning_rate
from adaptive_tx.rule import ComplexToRealError, Rule, _apply_rows, apply_rule
from adaptive_tx.state_precision import StorageSpec
from adaptive_tx.weight_decay import add_decoupled_weight_decay


class ScheduleFreeState(NamedTuple):
    r"""State of `schedule_free` (optax.contrib's fields and names).

    Attributes:
      b1: float32 scalar, :math:`\beta_1`, read by `schedule_free_eval_params` (the update uses
        the constructor's number).
      weight_sum: float32 scalar, :math:`\sum_{s \le t} \eta_{\max,s}^{p}`, the averaging
        weights so far.
      step_count: int32 scalar, 1 + the number of steps taken (saturating): the schedule's
        argument.
      max_lr: float32 scalar, the largest learning rate seen so far.
      base_optimizer_state: the base optimizer's state.
      z: params-shaped tree, :math:`z_t`, the base optimizer's iterates (``state_dtype``).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = schedule_free(optax.sgd(1.0), learning_rate=1.0)
      >>> state = tx.init(jnp.array([2.0]))
      >>> state.z, state.step_count
      (Array([2.], dtype=float32), Array(1, dtype=int32))
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: optax.OptState
    z: optax.Params


def average_of(y: jax.Array, z: jax.Array, b1: float | jax.Array) -> jax.Array:
    r"""The average :math:`x = (y - (1-\beta_1) z) / \beta_1` from the parameters and :math:`z`.

    Example:
      >>> average_of(jnp.array([1.0]), jnp.array([2.0]), 0.5)
      Array([0.], dtype=float32)
    """
    return (y - (1.0 - b1) * z) / b1


def schedule_free_rule(b1: float | jax.Array, weight: float | jax.Array) -> Rule:
    r"""The schedule-free interpolation of one coordinate, at a step of averaging weight `weight`.

    The gradient slot receives the base optimizer's update :math:`u_t` (its step of :math:`z`),
    the statistic is :math:`z`, the parameter is :math:`y_{t-1}`:

    .. math::

       z_t = z_{t-1} + u_t, \quad
       x_t = (1-c_t)\,\frac{y_{t-1} - (1-\beta_1) z_{t-1}}{\beta_1} + c_t z_t, \quad
       y_t = \beta_1 x_t + (1-\beta_1) z_t = -\mathrm{direction}

    (scale 1), and the update is :math:`y_t - y_{t-1}` (``gives_params``).

    Example:
      >>> rule = schedule_free_rule(0.5, 1.0)  # c = 1: x jumps to z
      >>> stats = rule.accumulate(jnp.array([-1.0]), (jnp.array([2.0]),), 1, jnp.array([2.0]))
      >>> stats, rule.direction(None, stats, 1, jnp.array([2.0]), (jnp.array([2.0]),))
      ((Array([1.], dtype=float32),), Array([-1.], dtype=float32))
    """

    def accumulate(u, stats, t, y):
        return (stats[0] + u,)

    def direction(u, stats, t, y, previous):
        z = stats[0]
        x = (1.0 - weight) * average_of(y, previous[0], b1) + weight * z
        return -(b1 * x + (1.0 - b1) * z)

    return Rule(
        initial=(0.0,),  # unused: z starts at the parameters (`schedule_free`'s init)
        accumulate=accumulate,
        direction=direction,
        scale=lambda stats, t: 1.0,
        reads_params=True,
        gives_params=True,
        reads_previous=True,
    )


def _check_b1(b1: Any) -> Any:
    number = _validate._concrete(b1)
    if number is not None and not 0.0 < number <= 1.0:
        raise ValueError(
            f"b1 must be in (0, 1], got b1={b1!r} (the average x = (y - (1 - b1) z) / b1 "
            "divides by b1; 0.9, 0.95 or 0.98 are usual)"
        )
    return _validate._guard_traced(b1, lambda x: (x > 0) & (x <= 1))


def _check_z_dtype(dtype: Any) -> Any:
    """The canonical float dtype of z (None: the parameters'), or a TypeError naming the argument:
    z holds the iterates themselves, so no 8-bit storage (nor stochastic rounding) is offered."""
    if dtype is None:
        return None
    try:
        canonical = jax.dtypes.canonicalize_dtype(dtype)
    except TypeError:
        canonical = None
    if canonical is None or not jnp.issubdtype(canonical, jnp.inexact) or canonical.itemsize < 2:
        raise TypeError(
            f"schedule_free: state_dtype must be None or a float dtype of 16 bits or more, got "
            f"state_dtype={dtype!r} (z holds the iterates, as precise as the parameters need: "
            "jnp.float32, or jnp.bfloat16 to halve it; the second moment's storage is nu_dtype)"
        )
    return canonical


def _averaging_weight(state: ScheduleFreeState, learning_rate, weight_lr_power) -> tuple:
    r""":math:`c_t = \eta_{\max,t}^p / \sum_{s\le t} \eta_{\max,s}^p` (0 while every rate was 0),
    the new running maximum and the new sum (optax.contrib's arithmetic)."""
    lr = learning_rate
    if callable(learning_rate):
        lr = jnp.asarray(learning_rate(state.step_count), dtype=state.max_lr.dtype)
    max_lr = jnp.maximum(state.max_lr, lr)
    weight = max_lr**weight_lr_power
    total = state.weight_sum + weight
    # optax's nan_to_num(weight / total) (0 / 0 = 0, w / inf = 0, a NaN rate stays NaN), without
    # computing the 0 / 0 (jax_debug_nans would stop there)
    finite = (total > 0) & jnp.isfinite(total)
    ck = jnp.where(finite, weight / jnp.where(finite, total, 1.0), 0.0)
    ck = jnp.where(jnp.isnan(weight) | jnp.isnan(total), weight + total, ck)
    return ck, max_lr, total


def schedule_free(
    base_optimizer: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Make `base_optimizer` schedule-free: gradients at y, steps on z, the model evaluated at x.

    With :math:`u_t` the base optimizer's update for the gradient :math:`g_t` taken at the
    parameters :math:`y_{t-1}` (for SGD :math:`u_t = -\gamma g_t`),

    .. math::

       z_t &= z_{t-1} + u_t, \qquad z_0 = y_0, \\
       x_t &= (1-c_t)\, x_{t-1} + c_t z_t, \qquad
       c_t = \frac{\eta_{\max,t}^{p}}{\sum_{s \le t} \eta_{\max,s}^{p}}, \\
       y_t &= \beta_1 x_t + (1-\beta_1) z_t,

    with :math:`\eta_{\max,t}` the largest learning rate so far and :math:`p` =
    ``weight_lr_power`` (:math:`c_t = 1/t` at a constant rate: :math:`x_t` is the mean of the
    :math:`z`'s). The parameters hold :math:`y`; :math:`x_{t-1} = (y_{t-1} - (1-\beta_1)
    z_{t-1})/\beta_1` is recomputed from them, so the state adds :math:`z` alone. **Evaluate the
    model at** :math:`x` (`schedule_free_eval_params`): :math:`y` is not the trained model.
    The base optimizer should have no momentum (the interpolation replaces it) and its rate
    no decay (warm-up only). Equals ``optax.contrib.schedule_free``.

    A row-sparse leaf of the base update (`adaptive_tx.sparse.RowSparse`) moves only its rows
    (lazy): an untouched row keeps its :math:`z` and its parameters, so its :math:`x` waits too.

    Reference: Defazio et al., "The Road Less Scheduled", NeurIPS 2024,
    https://arxiv.org/abs/2405.15682

    Args:
      base_optimizer: the optimizer whose updates step :math:`z` (its learning rate included).
      learning_rate: the base optimizer's rate (a number or a schedule of the step, from 1),
        which weighs the average.
      b1: :math:`\beta_1`, in (0, 1].
      weight_lr_power: :math:`p`, >= 0.
      state_dtype: dtype of :math:`z`: None (the parameters') or a float dtype.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose state is `ScheduleFreeState`; its
      ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = schedule_free(optax.sgd(1.0), learning_rate=1.0, b1=0.5)
      >>> params = jnp.array([2.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.array([1.0]), state, params)
      >>> params = optax.apply_updates(params, updates)  # z = 1, x = 1 (c = 1), y = 1
      >>> params, schedule_free_eval_params(state, params)
      (Array([1.], dtype=float32), Array([1.], dtype=float32))
    """
    if not callable(learning_rate):
        learning_rate = _validate.check_learning_rate(learning_rate)
    b1 = _check_b1(b1)
    weight_lr_power = _validate.check_non_negative("weight_lr_power", weight_lr_power)
    state_dtype = _check_z_dtype(state_dtype)
    base_optimizer = optax.with_extra_args_support(base_optimizer)

    # One trace per leaf shape and dtype (XLA inlines the calls; eager steps reuse them). b1 is the
    # constructor's number, closed over: 1 - b1 is computed from it as the reference computes it.
    @jax.jit
    def interpolate(u, stats, param, weight, t):
        return apply_rule(schedule_free_rule(b1, weight), u, stats, t, param=param)

    def init_fn(params):
        _validate.check_floating_params("schedule_free", params)
        # The step's scalars in float32 (float64 under x64) whatever the parameters' dtypes
        # (optax.contrib: the lowest of them, which mixed bfloat16 and float16 do not have).
        dtype = jnp.result_type(float)
        z = params if state_dtype is None else optax.tree.cast(params, dtype=state_dtype)
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype=dtype),
            weight_sum=jnp.zeros([], dtype=dtype),
            step_count=jnp.ones([], dtype=jnp.int32),
            max_lr=jnp.zeros([], dtype=dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=jax.tree.map(lambda a: jnp.array(a, copy=True), z),  # distinct: both donatable
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "schedule_free reads the params (its average is recomputed from them): call "
                "update(updates, state, params)"
            )
        ck, max_lr, total = _averaging_weight(state, learning_rate, weight_lr_power)
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra_args
        )
        sparse.check_rows("schedule_free", base_updates)
        _validate.check_tree_matches("schedule_free", sparse.shape_view(base_updates), params)
        step = functools.partial(interpolate, weight=ck, t=state.step_count)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(
            base_updates, sparse.is_row_sparse
        )
        zs, ys = treedef.flatten_up_to(state.z), treedef.flatten_up_to(params)
        new_updates, new_z = [], []
        for (path, u), z, y in zip(with_paths, zs, ys):
            try:
                if sparse.is_row_sparse(u):
                    update, (z,) = _apply_rows(step, u, (z,), y)
                else:
                    update, (z,) = step(u, (z,), y)
            except ComplexToRealError as error:  # z is the parameters' (or state_dtype's)
                leaf = jax.tree_util.keystr(path) or "<root>"
                raise TypeError(error.message("schedule_free", leaf)) from None
            new_updates.append(update)
            new_z.append(z)
        new_state = ScheduleFreeState(
            b1=state.b1,
            weight_sum=total,
            step_count=optax.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=treedef.unflatten(new_z),
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _schedule_free_state(state: Any) -> Any:
    """The one state of `schedule_free` in `state` (a chain's, a guard's, an injector's)."""
    is_ours = lambda node: isinstance(node, ScheduleFreeState)  # noqa: E731
    found = [node for node in jax.tree.leaves(state, is_leaf=is_ours) if is_ours(node)]
    if len(found) == 1:
        return found[0]
    if not found and getattr(state, "z", None) is not None and hasattr(state, "b1"):
        return state  # optax.contrib's ScheduleFreeState
    raise ValueError(
        "schedule_free_eval_params needs the state of one schedule_free transformation (the "
        f"optimizer's state, e.g. schedule_free_adamw's); found {len(found)} in a "
        f"{type(state).__name__}"
    )


def schedule_free_eval_params(state: optax.OptState, params: optax.Params) -> optax.Params:
    r"""The parameters to evaluate a schedule-free model at: the average :math:`x_t`.

    .. math::

       x_t = \frac{y_t - (1-\beta_1)\, z_t}{\beta_1},

    from the training parameters :math:`y_t` and the state's :math:`z_t`; as
    ``optax.contrib.schedule_free_eval_params``. The training parameters are an interpolation
    that still carries the last steps' noise: evaluate (and save for serving) :math:`x_t`.

    Args:
      state: the optimizer's state, holding one `ScheduleFreeState` (a chain, a guard's or
        ``inject_hyperparams``' state around it is searched).
      params: the training parameters :math:`y_t` (dense arrays).

    Returns:
      A tree like `params`.

    Raises:
      ValueError: if `state` holds no `ScheduleFreeState`, or several.

    Example:
      >>> import jax.numpy as jnp
      >>> from adaptive_tx import schedule_free_adamw
      >>> tx = schedule_free_adamw(0.1)
      >>> params = jnp.array([1.0])
      >>> state = tx.init(params)
      >>> schedule_free_eval_params(state, params)  # before any step: x = y = z
      Array([1.], dtype=float32)
    """
    found = _schedule_free_state(state)

    def average(y, z):  # in the dtype of the parameters promoted with z's, as optax's
        return average_of(y, z, found.b1).astype(jnp.result_type(y, z))

    return jax.tree.map(average, params, found.z)


def schedule_free_adamw(
    learning_rate: float = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Schedule-free AdamW: AdamW's step without momentum, on :math:`z`; the average replaces it.

    The base step (AdamW with :math:`\beta_1 = 0`, at the parameters :math:`y_{t-1}`) and
    `schedule_free`'s interpolation:

    .. math::

       z_t &= z_{t-1} - \eta_t \Big(\frac{g_t}{\sqrt{\nu_t/(1-\beta_2^t)} + \epsilon}
              + \lambda y_{t-1}\Big), \qquad
       \nu_t = \beta_2 \nu_{t-1} + (1-\beta_2) g_t^2, \\
       x_t &= (1-c_t)\, x_{t-1} + c_t z_t, \qquad
       y_t = \beta_1 x_t + (1-\beta_1) z_t,

    with :math:`c_t = \eta_{\max,t}^{p} / \sum_{s\le t} \eta_{\max,s}^{p}` and :math:`\eta_t` the
    rate warmed up linearly from 0 over ``warmup_steps`` then constant (no decay: the average
    does what a decaying schedule would). ``scale_by_ema_of_squares`` (bias-corrected, ε outside
    the root), ``add_decoupled_weight_decay`` and the learning rate, made schedule-free by
    `schedule_free`; equals ``optax.contrib.schedule_free_adamw``. The parameters hold
    :math:`y`: **evaluate and save the model at** `schedule_free_eval_params` (:math:`x_t`).

    Reference: Defazio et al., "The Road Less Scheduled", NeurIPS 2024,
    https://arxiv.org/abs/2405.15682

    Args:
      learning_rate: the peak rate :math:`\eta`, >= 0 (a number, as in optax).
      warmup_steps: None (no warm-up) or the length of the linear warm-up, an integer >= 1 (a
        static argument under ``optax.inject_hyperparams``).
      b1: :math:`\beta_1` of the interpolation, in (0, 1].
      b2: :math:`\beta_2` of the second moment, in [0, 1).
      eps: :math:`\epsilon`, >= 0.
      weight_decay: :math:`\lambda`, >= 0, at :math:`y_{t-1}` inside the base step.
      weight_lr_power: :math:`p`, >= 0 (2: the paper's weighting of the average).
      state_dtype: dtype of :math:`z`: None (the parameters') or a float dtype.
      nu_dtype: storage of :math:`\nu_t` (see `scale_by_ema_of_squares`).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from adaptive_tx import schedule_free_eval_params
      >>> tx = schedule_free_adamw(0.1)
      >>> params = jnp.array([1.0, -1.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), state, params)
      >>> params = optax.apply_updates(params, updates)  # z moves by -0.1 sign(g); c_1 = 1
      >>> params, schedule_free_eval_params(state, params)
      (Array([ 0.9, -0.9], dtype=float32), Array([ 0.9, -0.9], dtype=float32))
    """
    if warmup_steps is not None:
        if isinstance(warmup_steps, (jax.Array, np.ndarray)):
            raise ValueError(
                f"warmup_steps must be a Python integer >= 1 (it fixes the warm-up schedule), "
                f"got warmup_steps={warmup_steps!r}; under optax.inject_hyperparams pass "
                "static_args=('warmup_steps',)"
            )
        _validate.check_positive_int("warmup_steps", warmup_steps)
        learning_rate = optax.warmup_constant_schedule(
            init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps
        )
    base = optax.chain(
        scale_by_ema_of_squares(
            decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True, nu_dtype=nu_dtype
        ),
        add_decoupled_weight_decay(weight_decay),
        scale_by_learning_rate(learning_rate),
    )
    return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)
