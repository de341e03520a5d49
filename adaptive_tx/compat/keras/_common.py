r"""What every ``keras.optimizers`` preset shares: keras' clipping, options and the chain
(`adaptive_tx.compat.keras` has the presets and their conventions)."""


from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptive_tx import _validate, sparse
from adaptive_tx.compat._common import is_off, real_params_only
from adaptive_tx.learning_rate import scale_by_learning_rate
from adaptive_tx.weight_decay import add_decoupled_weight_decay

_COMPLEX_HINT = "keras optimizers have no convention for complex variables"


def clip_each_by_norm(max_norm: float) -> optax.GradientTransformation:
    r"""Clip each leaf to L2 norm ``max_norm`` separately (keras' ``clipnorm``).

    .. math::

       g \leftarrow g \,\frac{c}{\max(\|g\|_2, c)} \quad \text{for each leaf } g.

    ``optax.clip_by_global_norm`` applied to every leaf on its own.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = clip_each_by_norm(1.0)
      >>> updates, _ = tx.update({'a': jnp.array([3.0, 4.0]), 'b': jnp.array([0.5])}, tx.init(None))
      >>> updates['a'], updates['b']
      (Array([0.6, 0.8], dtype=float32), Array([0.5], dtype=float32))
    """
    clip = optax.clip_by_global_norm(max_norm)

    def clip_each(updates, params=None):
        del params
        return jax.tree.map(lambda g: clip.update(g, clip.init(g))[0], updates)

    return optax.stateless(clip_each)


def _clipping(clipnorm: Any, clipvalue: Any, global_clipnorm: Any) -> list:
    """Keras' gradient clipping as a list of at most one transformation (0 or None: none)."""
    given = {
        "clipnorm": clipnorm,
        "clipvalue": clipvalue,
        "global_clipnorm": global_clipnorm,
    }
    if sum(v is not None for v in given.values()) > 1:
        raise ValueError(
            "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
            f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
        )
    for name, value in given.items():
        _validate.check_non_negative(name, value, allow_inf=True)  # inf: no clipping
    if not is_off(clipnorm):
        return [clip_each_by_norm(clipnorm)]
    if not is_off(global_clipnorm):
        return [optax.clip_by_global_norm(global_clipnorm)]
    if not is_off(clipvalue):
        return [optax.clip(clipvalue)]
    return []


def _check_options(use_ema: bool, loss_scale_factor: Any, gradient_accumulation_steps: Any) -> None:
    """Rejects the keras options that change the math and that the presets do not reproduce."""
    if use_ema:
        raise ValueError(
            "use_ema=True is not supported: keep an exponential moving average of the "
            "parameters outside the optimizer (e.g. optax.ema applied to the parameters)"
        )
    if loss_scale_factor is not None:
        raise ValueError(
            f"loss_scale_factor={loss_scale_factor!r} is not supported: divide the gradients "
            "by the loss scale before the optimizer"
        )
    if not is_off(gradient_accumulation_steps):
        raise ValueError(
            f"gradient_accumulation_steps={gradient_accumulation_steps!r} is not supported: wrap "
            "the preset in optax.MultiSteps(tx, every_k_schedule=...)"
        )


def decay_before_step(
    decay: optax.GradientTransformation, step: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    r"""keras' order when the step reads the parameters: decay them first, then step from there.

    .. math::

       \theta' = \theta + \mathrm{decay}(0, \theta), \qquad
       u = (\theta' - \theta) + \mathrm{step}(g, \theta').

    Keras applies ``weight_decay`` to the variables before ``update_step``, so a step that reads
    them (Adafactor's :math:`\mathrm{RMS}(\theta)`) reads the decayed ones. For steps that do not
    read the parameters this equals ``optax.chain(step, decay)``.

    Args:
      decay: the weight decay, adding :math:`-\eta\lambda\theta` to zero updates.
      step: the rest of the update, evaluated at the decayed parameters.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose state is ``(decay state, step state)``;
      ``update`` needs the parameters.

    Example:
      >>> import jax.numpy as jnp
      >>> from adaptive_tx.weight_decay import add_decoupled_weight_decay
      >>> tx = decay_before_step(add_decoupled_weight_decay(0.5, learning_rate=1.0),
      ...                        optax.scale_by_param_block_rms())
      >>> params = jnp.array([2.0, 2.0])
      >>> updates, _ = tx.update(jnp.ones(2), tx.init(params), params)
      >>> updates  # -0.5 * 2 + RMS(2 * (1 - 0.5))
      Array([0., 0.], dtype=float32)
    """
    step = optax.with_extra_args_support(step)

    def init_fn(params):
        return decay.init(params), step.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        shrink, decay_state = decay.update(jax.tree.map(jnp.zeros_like, updates), state[0], params)
        decayed = optax.apply_updates(params, shrink)
        updates, step_state = step.update(updates, state[1], decayed, **extra_args)
        return jax.tree.map(jnp.add, shrink, updates), (decay_state, step_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _chain(
    name: str,
    scaling: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: Any,
    clipnorm: Any,
    clipvalue: Any,
    global_clipnorm: Any,
    use_ema: bool,
    loss_scale_factor: Any,
    gradient_accumulation_steps: Any,
    momentum: Any = 0,
    step_size: optax.ScalarOrSchedule | None = None,
    reads_params: bool = False,
    rate_inside: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """clipping → scaling → learning rate → momentum → weight decay, as keras applies them.

    ``step_size`` scales the step in place of ``learning_rate`` (the weight decay keeps
    ``learning_rate``); with ``reads_params`` the scaling sees the decayed parameters
    (`decay_before_step`); with ``rate_inside`` the scaling applies the learning rate itself
    (FTRL) and no ``scale_by_learning_rate`` follows it.
    """
    _check_options(use_ema, loss_scale_factor, gradient_accumulation_steps)
    _validate.check_learning_rate(learning_rate)
    parts = _clipping(clipnorm, clipvalue, global_clipnorm)
    step = [scaling, scale_by_learning_rate(learning_rate if step_size is None else step_size)]
    if rate_inside:
        step = [scaling]
    if not is_off(momentum):
        step.append(sparse.trace(decay=momentum))  # optax.trace; lazy on row-sparse leaves
    if weight_decay is None:
        parts += step
    else:
        decay = add_decoupled_weight_decay(weight_decay, learning_rate=learning_rate)
        parts += [decay_before_step(decay, optax.chain(*step))] if reads_params else step + [decay]
    return real_params_only(optax.chain(*parts), f"compat.keras.{name}", _COMPLEX_HINT)


def _float32(value: Any) -> Any:
    """A Python number rounded to float32, as keras' ``ops.cast(value, "float32")`` (arrays, e.g.
    injected hyperparameters, are float32 already and pass).

    Example:
      >>> 1 - _float32(0.99999)  # keras' Nadam weight of g**2: 1.00136e-05, not 1e-05
      1.0013580322265625e-05
    """
    if isinstance(value, (int, float)):
        return float(np.float32(value))
    return value


def _check_betas(beta_1: Any, beta_2: Any, epsilon: Any) -> None:
    _validate.check_unit_interval("beta_1", beta_1)
    _validate.check_unit_interval("beta_2", beta_2)
    _validate.check_non_negative("epsilon", epsilon)
