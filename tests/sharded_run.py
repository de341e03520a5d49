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
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import adaptive_tx as atx
from adaptive_tx import state_precision
from tests.cases import DEFAULTS, case_id, max_rel_diff, storage_options

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


@jax.jit
def _decoded(state):
    """Every array of the state as float (8-bit codes and scales multiplied out), in one program
    (decoded op by op, each op of the 8-bit map would compile on its own)."""

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


# --- explicit mesh axes: sharding is part of an array's type ------------------------------------

EXPLICIT_STORAGES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "bfloat16_sr": "bfloat16_sr",
    "int8_blockwise": "int8_blockwise",
    "factored": atx.Factored(min_dim_size_to_factor=2),
    "block_mean": atx.BlockMean(axes=(0,)),
}
# optax's layout (2, 8, 4) split along axis 1; 8-bit leaves (4096 entries) whose blocks fall
# across shards (m: 32 entries of a row per device), within them (e, b), and a scalar.
EXPLICIT_PARAMS = {
    "w": ((2, 8, 4), P(None, "x")),
    "m": ((16, 256), P(None, "x")),
    "e": ((64, 64), P("x", None)),
    "b": ((4096,), P("x")),
    "s": ((), P()),
}
# Built by an eager init too: one alias per storage, and the transformations with their own init.
EXPLICIT_EAGER = ["adam()|" + name for name in EXPLICIT_STORAGES] + [
    "rowwise_adagrad",
    "adafactor",
    "optax.adafactor",
    "sm3()",
]
# Compiled and run (1-2 s each): storages that reshard, round at random or reduce axes.
EXPLICIT_RUN = [
    "adam()|int8_blockwise",
    "adam()|bfloat16_sr",
    "adafactor",
    "rowwise_adagrad",
    "sm3()",
]


# Aliases that refuse the estimating storages (with a documented error, tested where they are
# defined): Adadelta's average of the steps must see the step each coordinate took.
PER_COORDINATE_ONLY = {"adadelta"}


def _explicit_case(row, storage):
    """The alias of `row` with its statistics stored as `storage`, or None where the alias has no
    statistic that storage applies to (Lion's one signed moment and the estimating storages; an
    alias without storage options appears once, as "float32", its default)."""
    spec = EXPLICIT_STORAGES[storage]
    accepted = storage_options(row[0])
    estimating = isinstance(spec, (atx.Factored, atx.BlockMean))
    kwargs = {"nu_dtype": spec} if "nu_dtype" in accepted else {}
    if not estimating and "mu_dtype" in accepted:
        kwargs["mu_dtype"] = spec  # estimating storages are for non-negative statistics only
    if not kwargs and storage == "float32":  # no storage option (rprop): its float32 default
        return lambda: getattr(atx, row[0])(**row[1])
    if not kwargs or (estimating and row[0] in PER_COORDINATE_ONLY):
        return None
    return lambda: getattr(atx, row[0])(**row[1], **kwargs)


# Aliases with storage options (mu_dtype / nu_dtype), run with every storage; the others (SM3,
# whose accumulator's storage is its cover set) once, with their own.
STORAGE_ROWS = [r for r in DEFAULTS if storage_options(r[0])]
OWN_STORAGE_ROWS = [r for r in DEFAULTS if r not in STORAGE_ROWS]


def _explicit_cases():
    cases = {
        f"{case_id(row)}|{storage}": _explicit_case(row, storage)
        for row in STORAGE_ROWS
        for storage in EXPLICIT_STORAGES
    }
    cases = {name: case for name, case in cases.items() if case is not None}
    for row in OWN_STORAGE_ROWS:
        cases[case_id(row)] = lambda row=row: getattr(atx, row[0])(**row[1])
    cases["rowwise_adagrad"] = lambda: atx.rowwise_adagrad(0.1)
    cases["ftrl"] = lambda: atx.ftrl(0.1, l1_regularization_strength=0.5)
    cases["adafactor"] = lambda: atx.adafactor(0.1, min_dim_size_to_factor=2)
    cases["optax.adafactor"] = lambda: optax.adafactor(0.1, min_dim_size_to_factor=2)
    return cases


def _types(tree):
    def one(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            aval = jax.core.ShapedArray(x.shape, x.dtype, sharding=x.sharding)
        else:
            aval = x if isinstance(x, jax.core.ShapedArray) else jax.typeof(x)
        return str(aval.update(weak_type=False))  # e.g. float32[2,8@x,4]

    return jax.tree.map(one, tree)


def explicit():
    """Under ``jax.set_mesh`` with explicit axes, for every case: the state's types (shape, dtype,
    sharding) from a jitted ``init`` and from ``update`` (a ``jit(fori_loop(update))`` traced, which
    raises unless they agree), or the error; for the cases in EXPLICIT_EAGER also from an eager
    ``init``, and the loop compiled and run for those in EXPLICIT_RUN (compiling is the slow part:
    the rest is traced only)."""
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
    out, to_run = {}, {}
    with jax.set_mesh(mesh):
        params = {
            k: jax.device_put(np.full(shape, 0.5, np.float32), NamedSharding(mesh, spec))
            for k, (shape, spec) in EXPLICIT_PARAMS.items()
        }
        grads = jax.tree.map(lambda p: p * 0.1 + 0.3, params)
        for name, factory in _explicit_cases().items():
            try:
                tx = factory()

                def loop(state, params, grads, tx=tx):
                    body = lambda _, s: tx.update(grads, s, params)[1]
                    return jax.lax.fori_loop(0, 2, body, state)

                state = jax.jit(tx.init).trace(params).out_info
                if name in EXPLICIT_EAGER:
                    state = tx.init(params)
                out[name] = {
                    "params": _types(params),
                    "init": _types(state),
                    "jit_init": _types(jax.jit(tx.init).trace(params).out_info),
                    "update": _types(jax.jit(loop).trace(state, params, grads).out_info),
                }
                if name in EXPLICIT_RUN:
                    to_run[name] = (loop, state)
            except Exception as error:  # reported, and the test fails naming the case
                out[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}

        @jax.jit
        def run_all(states, params, grads):
            return {name: loop(states[name], params, grads) for name, (loop, _) in to_run.items()}

        final = run_all({name: s for name, (_, s) in to_run.items()}, params, grads)
        for name, state in final.items():
            out[name]["run"] = _types(state)
            out[name]["finite"] = all(  # every leaf, the packed hyperparameters included
                bool(np.all(np.isfinite(np.asarray(x, np.float32))))
                for x in jax.tree.leaves(state)
            )
    return out


if __name__ == "__main__":
    names = sys.argv[1:] or list(OPTIMIZERS)
    result = {name: run(name) for name in names}
    result["explicit"] = explicit()
    print(json.dumps(result))
