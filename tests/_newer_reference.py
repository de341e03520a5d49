"""Shared runner for the float64 references of the newer methods (ADOPT, LaProp, Adan, AdEMAMix,
cautious masking): each row runs the float64 reference, optax's twin in float64 (checking the
reference's conventions far below float32 noise) and the library's alias and primitive in float32.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np

from tests.cases import twin
from tests.test_reference import LR, TOL, TOL_X64, _assert_close, _run_jax


def alias_args(name, kwargs):
    """The row's arguments with the alias's defaults filled in."""
    bound = inspect.signature(twin(name)).bind(**{"learning_rate": LR, **kwargs})
    bound.apply_defaults()
    return dict(bound.arguments)


def reference(run, name, kwargs, problem):
    """The float64 reference `run` on the row's arguments (every argument it takes is used)."""
    args = alias_args(name, kwargs)
    hyper = {k: v for k, v in args.items() if k in inspect.signature(run).parameters}
    ignored = set(args) - set(hyper) - {"learning_rate", "mu_dtype", "mask"}
    assert not ignored, f"{run.__name__} ignores {ignored}"
    return np.stack(run(*problem, args["learning_rate"], **hyper))


def _error(actual, expected):
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1.0)))


def check_row(run, name, kwargs, problem, ours):
    """optax's twin in float64 within TOL_X64 of the reference (the reference's conventions are
    optax's); `ours` in float32 within TOL, or within 1.1 times optax's own float32 error where
    that is larger: optax computes 1 - b from b rounded to float32 (1.7e-4 off for b = 0.9999,
    which AdEMAMix's slow moment multiplies by alpha), and parity with optax is the contract.
    Returns (our float32 error, optax's float32 error), for the parity figures."""
    expected = reference(run, name, kwargs, problem)
    tx = lambda: twin(name)(**{"learning_rate": LR, **kwargs})  # noqa: E731
    with jax.enable_x64(True):
        _assert_close(_run_jax(tx(), problem, jnp.float64), expected, tol=TOL_X64)
    theirs = _error(_run_jax(tx(), problem), expected)
    actual = _run_jax(ours, problem)
    _assert_close(actual, expected, tol=max(TOL, 1.1 * theirs))
    return _error(actual, expected), theirs
