"""Bytes of optimizer state per parameter, for each method and storage option, measured.

Each optimizer is initialised on real float32 parameters and takes one jitted step; the bytes the
resulting state's arrays hold (``adaptive_tx.state_nbytes``: every shard on every device, so
replication would show) are divided by the number of parameters. Nothing is computed by hand: a
table row is what the arrays occupy, counters and hyperparameters included. optax.adam and
optax.adafactor are the anchors.

Parameter sets:

* ``matrix``: one 4096 x 4096 float32 matrix (16.8M parameters);
* ``transformer``: a d=512 transformer block with an 8192-token embedding (7.3M parameters:
  kernels, biases and layer-norm scales of several shapes);
* ``digits``: the 64-256-10 MLP of examples/low_precision.py (19k parameters; small leaves stay
  float32 under 8-bit storage, as bitsandbytes does below 4096 coordinates).

Run::

    python benchmarks/state_memory.py                 # all sets, markdown table
    python benchmarks/state_memory.py --sets matrix
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adaptive_tx as atx

PARAMETER_SETS = {
    "matrix": {"w": (4096, 4096)},
    "transformer": {
        "embed": (8192, 512),
        "qkv": (512, 1536),
        "qkv_bias": (1536,),
        "attn_out": (512, 512),
        "mlp_in": (512, 2048),
        "mlp_in_bias": (2048,),
        "mlp_out": (2048, 512),
        "ln1_scale": (512,),
        "ln2_scale": (512,),
    },
    "digits": {"hidden": (64, 256), "hidden_bias": (256,), "out": (256, 10), "out_bias": (10,)},
}

INT8 = "int8_blockwise"
SR = "bfloat16_sr"
E4M3, E5M2 = "float8_e4m3fn_blockwise", "float8_e5m2_blockwise"

# (method, option, factory); learning rates are irrelevant to the state's size.
OPTIMIZERS = [
    ("optax.adam", "float32 (anchor)", lambda: optax.adam(1e-3)),
    ("adam", "float32", lambda: atx.adam(1e-3)),
    ("adam", "bfloat16", lambda: atx.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)),
    ("adam", "bfloat16_sr", lambda: atx.adam(1e-3, mu_dtype=SR, nu_dtype=SR)),
    ("adam", "int8_blockwise", lambda: atx.adam(1e-3, mu_dtype=INT8, nu_dtype=INT8)),
    (
        "adam",
        "float8_e4m3fn_blockwise",
        lambda: atx.adam(1e-3, mu_dtype=E4M3, nu_dtype=E4M3),
    ),
    ("adam", "mu e4m3fn, nu e5m2", lambda: atx.adam(1e-3, mu_dtype=E4M3, nu_dtype=E5M2)),
    ("adam", "nu Factored()", lambda: atx.adam(1e-3, nu_dtype=atx.Factored())),
    ("adam", "nu BlockMean(axes=(0,))", lambda: atx.adam(1e-3, nu_dtype=atx.BlockMean((0,)))),
    (
        "adam",
        "mu int8, nu Factored()",
        lambda: atx.adam(1e-3, mu_dtype=INT8, nu_dtype=atx.Factored()),
    ),
    ("amsgrad", "float32", lambda: atx.amsgrad(1e-3)),
    ("amsgrad", "int8_blockwise", lambda: atx.amsgrad(1e-3, mu_dtype=INT8, nu_dtype=INT8)),
    ("adamax", "int8_blockwise", lambda: atx.adamax(1e-3, mu_dtype=INT8, nu_dtype=INT8)),
    ("radam", "bfloat16_sr", lambda: atx.radam(1e-3, mu_dtype=SR, nu_dtype=SR)),
    ("rmsprop", "float32", lambda: atx.rmsprop(1e-3)),
    ("rmsprop", "int8_blockwise", lambda: atx.rmsprop(1e-3, nu_dtype=INT8)),
    ("rmsprop", "nu Factored()", lambda: atx.rmsprop(1e-3, nu_dtype=atx.Factored())),
    ("adagrad", "float32", lambda: atx.adagrad(1e-2)),
    ("adagrad", "int8_blockwise", lambda: atx.adagrad(1e-2, nu_dtype=INT8)),
    ("optax.adafactor", "(anchor)", lambda: optax.adafactor(1e-3)),
    ("adafactor", "factored", lambda: atx.adafactor(1e-3)),
]


def measure(factory, shapes, seed=0):
    """Bytes of the state after one jitted step on float32 parameters of `shapes`."""
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    grads = jax.tree.map(lambda p: 0.01 * p, params)
    tx = factory()

    @jax.jit
    def first_step(params, grads):
        state = tx.init(params)
        _, state = tx.update(grads, state, params)
        return state

    state = jax.block_until_ready(first_step(params, grads))
    return atx.state_nbytes(state)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(PARAMETER_SETS), help=",".join(PARAMETER_SETS))
    args = p.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    counts = {s: sum(math.prod(shape) for shape in PARAMETER_SETS[s].values()) for s in sets}
    table = {}
    for method, option, factory in OPTIMIZERS:
        table[(method, option)] = {s: measure(factory, PARAMETER_SETS[s]) for s in sets}
    anchor = table[OPTIMIZERS[0][:2]]

    header = "| method | state option | " + " | ".join(
        f"{s} ({counts[s] / 1e6:.2f}M params): bytes/param, x optax.adam" for s in sets
    )
    lines = [header + " |", "|" + "---|" * (2 + len(sets))]
    for (method, option), row in table.items():
        cells = [f"{row[s] / counts[s]:.4f}, {row[s] / anchor[s]:.4f}x" for s in sets]
        lines.append(f"| {method} | {option} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return table, counts


if __name__ == "__main__":
    main()
