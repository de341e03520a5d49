"""Runs optimizers sharded over 8 virtual CPU devices and on one device; prints JSON.

Started by tests/test_sharding.py in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set before jax starts).
For each optimizer it reports the partition spec of every state leaf after a jitted init and after
the jitted steps, the bytes the state holds on all devices together, and the largest difference
between the sharded run and the single-device run (parameters and decoded state).
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import adaptive_tx as atx
from adaptive_tx import state_precision
from tests.cases import max_rel_diff

STEPS = 5
# Every parameter but the scalar is split over all 8 devices, so that a copy of a state leaf on
# several devices can only come from the state's own sharding.
SHAPES = {"w": (512, 1024), "emb": (1024, 256), "b": (4096,), "s": ()}
SPECS = {"w": P("a", "b"), "emb": P(("a", "b"), None), "b": P(("a", "b")), "s": P()}
INT8 = atx.Int8Blockwise(min_size=0)

OPTIMIZERS = {
    "adam": lambda: atx.adam(1e-2),
    "adam_bf16_sr": lambda: atx.adam(1e-2, mu_dtype="bfloat16_sr", nu_dtype="bfloat16_sr"),
    "adam_int8": lambda: atx.adam(1e-2, mu_dtype=INT8, nu_dtype=INT8),
    "adafactor": lambda: atx.adafactor(1e-2),
    "adam_mini": lambda: atx.adam(1e-2, nu_dtype=atx.BlockMean(axes=(0,))),
}


def _problem():
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    grads = [
        {
            k: (rng.normal(size=s) * np.exp(rng.normal())).astype(np.float32)
            for k, s in SHAPES.items()
        }
        for _ in range(STEPS)
    ]
    return params, grads


def _step(tx):
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _specs(tree):
    return {
        jax.tree_util.keystr(path): [
            list(a) if isinstance(a, tuple) else a for a in leaf.sharding.spec
        ]
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _copies(tree):
    """How many copies of each leaf the devices hold together (1: split, 8: replicated)."""
    return {
        jax.tree_util.keystr(path): atx.state_nbytes(leaf) / max(leaf.nbytes, 1)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _sizes(tree):
    return {
        jax.tree_util.keystr(p): int(x.size)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _decoded(state):
    """Every array of the state as float (8-bit codes and scales multiplied out)."""

    def decode(stat):
        if not state_precision.is_stored(stat):
            return stat
        treedef = jax.tree.structure(stat[0])
        return [state_precision.decode(x) for x in state_precision.split(stat, treedef)]

    return jax.tree.map(decode, state, is_leaf=state_precision.is_stored)


def run(name):
    tx = OPTIMIZERS[name]()
    params, grads = _problem()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
    p_sh = {k: NamedSharding(mesh, SPECS[k]) for k in SHAPES}
    s_sh = atx.state_shardings(tx, params, p_sh)

    sharded_params = jax.device_put(params, p_sh)
    state = jax.jit(tx.init, out_shardings=s_sh)(sharded_params)
    init_specs = _specs(state)
    step = jax.jit(
        _step(tx),
        in_shardings=(p_sh, s_sh, p_sh),
        out_shardings=(p_sh, s_sh),
        donate_argnums=(0, 1),
    )
    p = sharded_params
    for g in grads:
        p, state = step(p, state, jax.device_put(g, p_sh))

    device = jax.devices()[0]
    single_params = jax.device_put(params, device)
    single_state = jax.jit(tx.init)(single_params)
    single_step = jax.jit(_step(tx))
    q = single_params
    for g in grads:
        q, single_state = single_step(q, single_state, jax.device_put(g, device))

    return {
        "init_specs": init_specs,
        "step_specs": _specs(state),
        "param_specs": _specs(p),
        "max_diff_params": max_rel_diff(p, q, floor=1e-2),
        "max_diff_state": max_rel_diff(_decoded(state), _decoded(single_state), floor=1e-2),
        "bitwise_equal": all(
            np.array_equal(np.asarray(x), np.asarray(y))
            for x, y in zip(jax.tree.leaves((p, state)), jax.tree.leaves((q, single_state)))
        ),
        "copies": _copies(state),
        "sizes": _sizes(state),
        "bytes_sharded": atx.state_nbytes(state),
        "bytes_single": atx.state_nbytes(single_state),
        "devices": len(jax.devices()),
    }


if __name__ == "__main__":
    names = sys.argv[1:] or list(OPTIMIZERS)
    print(json.dumps({name: run(name) for name in names}))
