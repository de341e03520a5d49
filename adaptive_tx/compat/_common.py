"""Helpers shared by the framework presets (not public)."""

from __future__ import annotations

from typing import Any

import optax

from adaptive_tx import _validate


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
    first, second = (_validate.check_unit_interval(f"{name}[{i}]", b) for i, b in enumerate(pair))
    return first, second


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
