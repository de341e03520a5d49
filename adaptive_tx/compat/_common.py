"""Helpers shared by the framework presets (not public)."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import optax

from adaptive_tx import _validate


def is_off(value: object) -> bool:
    """Whether an optional step is switched off: a Python number equal to 0 (or None).

    Only Python numbers decide the chain's structure, so that the structure is the same at
    ``init`` and ``update`` under `optax.inject_hyperparams` (which passes arrays to both).

    Example:
      >>> is_off(0), is_off(0.0), is_off(None), is_off(0.1)
      (True, True, True, False)
    """
    return value is None or (isinstance(value, (int, float)) and value == 0)


F = TypeVar("F", bound=Callable[..., Any])


def _is_learning_rate(value: object) -> bool:
    """A number, a 0-d array or a schedule (a callable that is not an nnx Module)."""
    if isinstance(value, numbers.Real) or (hasattr(value, "ndim") and np.ndim(value) == 0):
        return True
    return callable(value) and not hasattr(value, "__nnx_repr__")


def no_params_argument(preset: F) -> F:
    """``preset`` (a ``compat.torch`` factory), refusing torch's positional ``params`` by name.

    torch's optimizers take the parameters first (``torch.optim.AdamW(params, lr=...)``); an
    Optax transformation is built without them and gets them at ``init``. A first positional
    argument that is not a learning rate (a tree, a list, a model), or one given together with
    ``lr=``, raises a TypeError that says so, instead of Python's "got multiple values".

    Example:
      >>> @no_params_argument
      ... def AdamW(lr=1e-3, weight_decay=1e-2):
      ...     return lr
      >>> AdamW({"w": 1.0}, lr=0.1)
      Traceback (most recent call last):
      ...
      TypeError: compat.torch.AdamW takes no params: drop the first argument and pass the parameters to init, e.g. tx = compat.torch.AdamW(lr=...); state = tx.init(params) (or nnx.Optimizer(model, tx, wrt=nnx.Param)); for torch's param_groups see docs/porting_from_torch.md
    """
    name = preset.__name__

    @functools.wraps(preset)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if args and ("lr" in kwargs or not _is_learning_rate(args[0])):
            raise TypeError(
                f"compat.torch.{name} takes no params: drop the first argument and pass the "
                f"parameters to init, e.g. tx = compat.torch.{name}(lr=...); "
                "state = tx.init(params) (or nnx.Optimizer(model, tx, wrt=nnx.Param)); "
                "for torch's param_groups see docs/porting_from_torch.md"
            )
        return preset(*args, **kwargs)

    return checked  # type: ignore[return-value]


def check_pair(name: str, pair: object) -> tuple[Any, Any]:
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
