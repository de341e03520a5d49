"""The layout of a lean state's arrays: placeholders and shardings that follow the parameter.

Under explicit mesh axes (``jax.set_mesh``) an array's sharding is part of its type, and
``update`` must return the state with the types ``init`` gave it. Every array a storage keeps is
built here from the parameter it mirrors (`full_like`, sharded as `stat_spec` says) and every
array a storage returns goes through `keep_layout`; `adaptive_tx.sharding.state_shardings` gives
the same layout to ``jax.jit``'s shardings.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

BLOCK_SIZE = 256
"""Coordinates per 8-bit quantization block, along a statistic's last axis."""

PLACEHOLDER_SHAPE = (1,)
"""The shape of an array a storage keeps but does not use for a leaf (the 8-bit scales of a leaf
kept whole, the column means of an unfactored one), as optax does: a checkpointer refuses
zero-size arrays, and a (1,) array gathered by row index reads and writes back its one value."""


def placeholder(dtype: Any = jnp.float32) -> jax.Array:
    """The (1,)-shaped zero a storage keeps where a leaf does not use one of its arrays.

    Example:
      >>> placeholder()
      Array([0.], dtype=float32)
    """
    return jnp.zeros(PLACEHOLDER_SHAPE, dtype)


def stat_spec(
    param_shape: tuple[int, ...], spec: Any, shape: tuple[int, ...], axis_size: Any
) -> tuple[Any, ...]:
    """The partition spec of an array of `shape` kept for a parameter sharded by `spec`.

    The one rule of the state's layout: an axis of the parameter's size keeps the parameter's
    mesh axes; an axis averaged away (size 1) is replicated; a block axis (8-bit scales along the
    last axis, ``ceil(n / 256)`` blocks) keeps the parameter's mesh axes when every shard holds
    whole blocks (``n`` a multiple of 256 times the number of shards), else it is replicated. An
    array of another rank (a placeholder) is replicated.

    Args:
      param_shape: the parameter's shape.
      spec: the parameter's partition spec (a tuple of mesh axis names, None or tuples of names).
      shape: the shape of the array kept for the parameter.
      axis_size: ``names -> int``, the number of shards a spec entry splits an axis into.

    Example:
      >>> stat_spec((64, 1024), ('x', 'y'), (64, 4), {'x': 2, 'y': 4}.get)
      ('x', 'y')
      >>> stat_spec((64, 1000), ('x', 'y'), (64, 4), {'x': 2, 'y': 4}.get)
      ('x', None)
    """
    if len(shape) != len(param_shape):
        return (None,) * len(shape)
    spec = tuple(spec) + (None,) * (len(param_shape) - len(tuple(spec)))
    kept = []
    for size, param_size, names in zip(shape, param_shape, spec):
        if names is None or size == 1:
            kept.append(None)
        elif size == param_size:
            kept.append(names)
        else:  # a block axis: sharded where every shard holds whole blocks
            kept.append(names if param_size % (BLOCK_SIZE * axis_size(names)) == 0 else None)
    return tuple(kept)


def explicit_sharding(x: Any) -> Any:
    """The sharding in `x`'s type if its mesh has explicit axes (``jax.set_mesh``), else None."""
    try:
        sharding = jax.typeof(x).sharding
    except (TypeError, AttributeError):
        return None
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return None
    explicit = any(kind == jax.sharding.AxisType.Explicit for kind in mesh.axis_types)
    return sharding if explicit else None


def full_like(param: Any, value: Any, dtype: Any, shape: tuple[int, ...] | None = None):
    """An array of `shape` (default: the parameter's) filled with `value`, laid out like `param`.

    Under explicit mesh axes (``jax.set_mesh``) the sharding is part of an array's type and
    ``update`` must return the state with the types ``init`` gave it (a ``lax.fori_loop`` over
    steps requires it): every array a storage keeps is built here, sharded as `stat_spec` says,
    which is the sharding the step's arithmetic gives it.

    Example:
      >>> full_like(jnp.zeros((2, 3)), 1.0, jnp.bfloat16, shape=(2, 1))
      Array([[1],
             [1]], dtype=bfloat16)
    """
    shape = tuple(jnp.shape(param)) if shape is None else tuple(shape)
    if shape == tuple(jnp.shape(param)):
        return jnp.full_like(param, value, dtype)
    sharding = explicit_sharding(param)
    if sharding is None:
        return jnp.full(shape, value, dtype)
    spec = stat_spec(jnp.shape(param), sharding.spec, shape, lambda n: mesh_size(sharding, n))
    target = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))
    return jax.lax.full(shape, value, dtype, sharding=target)


def mesh_size(sharding: Any, names: Any) -> int:
    names = names if isinstance(names, tuple) else (names,)
    return math.prod(sharding.mesh.shape[name] for name in names)


def keep_layout(x: jax.Array, previous: jax.Array) -> jax.Array:
    """`x` with the sharding of `previous` under explicit mesh axes (a no-op where they agree).

    A storage's ``encode`` returns its arrays through here, so that the state ``update`` returns
    has the types the state it received had, whatever sharding the arithmetic propagated.

    Example:
      >>> keep_layout(jnp.ones(2), jnp.zeros(2))
      Array([1., 1.], dtype=float32)
    """
    want = explicit_sharding(previous)
    if want is None or jax.typeof(x).sharding.spec == want.spec:
        return x
    return jax.sharding.reshard(x, want)


def lookup(table: np.ndarray, index: jax.Array) -> jax.Array:
    """``table[index]``: a small constant table read at every entry of `index`, sharded like it.

    Example:
      >>> lookup(np.array([10.0, 20.0]), jnp.array([[1, 0]]))
      Array([[20., 10.]], dtype=float32)
    """
    sharding = explicit_sharding(index)
    return jnp.asarray(table).at[index].get(out_sharding=sharding)
