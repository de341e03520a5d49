r"""Shardings of an optimizer state: every statistic laid out like its parameter.

Under ``jax.jit`` with ``in_shardings`` / ``out_shardings``, a state leaf that is not given a
sharding is replicated, which for Adam means two full copies of the model on every device.
`state_shardings` gives each leaf of a state the sharding of the parameter it belongs to: full-size
statistics (moments, 8-bit codes) take the parameter's partition spec; reduced ones (factored row
and column means, per-block means) keep it along the axes that survive and are replicated only along
the axes they averaged away (size 1); 8-bit block scales keep it along the block axis where every
shard holds whole blocks; placeholders are replicated. This is the layout ``init`` builds under
explicit mesh axes (`adaptive_tx._layout.stat_spec`). Counters and hyperparameters (scalars) are
replicated.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import optax
from jax.sharding import NamedSharding, PartitionSpec

from adaptive_tx import _layout


def _axis_size(mesh: jax.sharding.Mesh, names: Any) -> int:
    if names is None:
        return 1
    names = names if isinstance(names, tuple) else (names,)
    return math.prod(mesh.shape[name] for name in names)


def _like_param(x: Any, sharding: NamedSharding, param: Any) -> NamedSharding:
    """The sharding of one array kept for a parameter (`adaptive_tx._layout.stat_spec`: the layout
    ``init`` gives it under explicit mesh axes)."""
    axis_size = lambda names: _axis_size(sharding.mesh, names)
    spec = _layout.stat_spec(tuple(param.shape), sharding.spec, tuple(x.shape), axis_size)
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def state_shardings(
    tx: optax.GradientTransformation, params: optax.Params, param_shardings: Any
) -> Any:
    """The `NamedSharding` of every leaf of ``tx.init(params)``, each statistic like its parameter.

    Use it as the ``out_shardings`` of a jitted ``tx.init`` and as the state's in/out shardings of a
    jitted step, so that no full-size statistic is replicated.

    Args:
      tx: a transformation whose state holds params-shaped trees (this library's transformations,
        their chains with optax's stateless or params-shaped transformations). Found with
        ``optax.tree_map_params``.
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``).
      param_shardings: a tree like `params` of `NamedSharding` on one mesh.

    Returns:
      A tree of `NamedSharding` with the structure of ``tx.init(params)``.

    Example:
      >>> import jax, numpy as np, adaptive_tx as atx
      >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()[:1]), ('x',))
      >>> params = {'w': jax.ShapeDtypeStruct((512, 256), np.float32)}
      >>> shardings = atx.state_shardings(
      ...     atx.adafactor(1e-2), params, {'w': NamedSharding(mesh, P(None, 'x'))})
      >>> nu = shardings[0].nu
      >>> nu.row['w'].spec, nu.col['w'].spec
      (P(None, 'x'), P(None, None))
    """
    leaves = jax.tree.leaves(param_shardings)
    if not leaves or not all(isinstance(s, NamedSharding) for s in leaves):
        raise TypeError(
            "param_shardings must be a tree of jax.sharding.NamedSharding (one mesh), got "
            f"{[type(s).__name__ for s in leaves[:3]]}"
        )
    replicated = NamedSharding(leaves[0].mesh, PartitionSpec())
    shapes = jax.eval_shape(tx.init, params)
    return optax.tree_map_params(
        tx,
        _like_param,
        shapes,
        param_shardings,
        params,
        transform_non_params=lambda _: replicated,
    )
