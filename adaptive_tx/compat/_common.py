"""Helpers shared by the framework presets (not public)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.factored import scale_by_factored_ema_of_squares


def is_off(value: Any) -> bool:
    """Whether an optional step is switched off: a Python number equal to 0 (or None).

    Only Python numbers decide the chain's structure, so that the structure is the same at
    ``init`` and ``update`` under `optax.inject_hyperparams` (which passes arrays to both).

    Example:
      >>> is_off(0), is_off(0.0), is_off(None), is_off(0.1)
      (True, True, True, False)
    """
    return value is None or (isinstance(value, (int, float)) and value == 0)


def check_pair(name: str, pair: Any) -> tuple[Any, Any]:
    """The two decay rates of ``pair`` (torch's ``betas``), each in [0, 1).

    Example:
      >>> check_pair("betas", (0.9, 0.999))
      (0.9, 0.999)
    """
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {name}={pair!r}")
    for i, beta in enumerate(pair):
        _validate.check_unit_interval(f"{name}[{i}]", beta)
    return pair[0], pair[1]


def real_params_only(
    tx: optax.GradientTransformation, where: str, hint: str
) -> optax.GradientTransformationExtraArgs:
    """`tx`, whose ``init`` rejects complex parameters (naming the leaf), state unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = real_params_only(optax.sgd(0.1), "sgd", "split them")
      >>> tx.init(jnp.zeros(1, jnp.complex64))
      Traceback (most recent call last):
      ...
      TypeError: sgd: parameter <root> is complex (complex64); split them
    """
    tx = optax.with_extra_args_support(tx)

    def init_fn(params):
        _validate.check_real_params(where, params, hint)
        return tx.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, tx.update)


def relative_step_size(learning_rate: optax.ScalarOrSchedule) -> optax.Schedule:
    r"""keras' and torch's Adafactor step size :math:`\rho_t = \min(\eta_t, 1/\sqrt{t})`, a schedule.

    The count is 0, 1, 2, ... (t = count + 1), as ``scale_by_learning_rate`` passes it; η is a
    number or a schedule of the same count. Computed in float32 (keras' arithmetic).

    Example:
      >>> [float(relative_step_size(0.5)(count)) for count in (0, 3, 15)]
      [0.5, 0.5, 0.25]
    """

    def rate(count):
        value = learning_rate(count) if callable(learning_rate) else learning_rate
        t = jnp.asarray(count, jnp.float32) + 1
        return jnp.minimum(jnp.asarray(value, jnp.float32), 1 / jnp.sqrt(t))

    return rate


def adafactor_scaling(
    beta_2_decay: Any,
    clip_threshold: Any,
    epsilon_2: Any,
    *,
    eps_grad_sq: Any = 0.0,
) -> optax.GradientTransformation:
    r"""keras' and torch's Adafactor before the step size: :math:`\max(\epsilon_2,
    \mathrm{RMS}(\theta))\, \hat u_t`.

    `scale_by_factored_ema_of_squares` (decay :math:`1 - t^{\text{beta\_2\_decay}}`, every
    matrix factored on its last two axes), then ``optax.clip_by_block_rms`` (:math:`\hat u =
    u / \max(1, \mathrm{RMS}(u)/d)`) and ``optax.scale_by_param_block_rms`` (the parameter's RMS,
    at least :math:`\epsilon_2`), whose formulas are keras' and torch's. The presets check the
    arguments under their own names.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adafactor_scaling(-0.8, 1.0, 1e-3, eps_grad_sq=1e-30)
      >>> params = jnp.array([3.0, -4.0])
      >>> updates, _ = tx.update(jnp.array([1.0, 0.0]), tx.init(params), params)
      >>> updates  # u = (1, 0), RMS(u) = 0.71 <= 1, times RMS(params) = 3.54
      Array([3.535534, 0.      ], dtype=float32)
    """
    factored = scale_by_factored_ema_of_squares(
        decay_rate=-beta_2_decay,
        min_dim_size_to_factor=0,
        epsilon=eps_grad_sq,
        last_two_axes=True,
    )
    return optax.chain(
        factored,
        optax.clip_by_block_rms(clip_threshold),
        optax.scale_by_param_block_rms(epsilon_2),
    )
