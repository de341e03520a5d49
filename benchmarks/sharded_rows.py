"""Embedding tables split by rows over devices: the row-sharded step against the dense sharded one.

A V x D fp32 table split by rows over the devices, K rows looked up per step (default K = 10,000;
V = 1,000,000 x 64 and 8,000,000 x 16). Each contender is one Adam step, update + apply, jitted
with donated buffers, warmed up, run round by round in one process and reported as the median:

  row-sharded     adaptive_tx.sparse.row_sharded(adam): the K indices and values all-gathered,
                  each device steps the touched rows it holds (lazy, as one device would) in
                  its 2 K / n slots
  all K slots     the same with capacity=None: every device sorts the K indices and steps K
                  slots, the rows it does not hold left empty (host devices only)
  skewed          row-sharded with all K ids in the first device's rows: over its slots, every
                  device steps all K slots that step (the exact fallback; host devices only)
  dense sharded   adaptive_tx.adam on the dense V x D gradient split by rows like the table (no
                  collective at all: every device streams its V/n x D slice of 5 arrays)
  ideal shard     one device's lazy step on its share alone: K/n rows of a V/n x D table, what a
                  device would do if the routing cost nothing (the target the row-sharded step
                  is compared to: per-device work following K/n, not V)
  one device      the lazy step of the whole table on one device (K rows of V)

On the host, the n devices are threads of one CPU (``--devices``, 8 by default, set through
``XLA_FLAGS`` before jax starts), so a step's wall time is the devices' work divided by the
cores, not one device's time. With ``--gpu`` the script uses the devices as they are (one GPU: a
mesh of 1) and also times ``--loop`` steps inside one jitted loop (device time, not dispatch).
The compiled row-sharded step's collectives are printed (element counts): none has the table's
size.

    python benchmarks/sharded_rows.py                       # 8 host devices (~7 GB of memory)
    python benchmarks/sharded_rows.py --sizes 100000x16 --k 2000 --rounds 5     # quick
    python benchmarks/sharded_rows.py --gpu --loop 50       # on a GPU
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000x64,8000000x16", help="VxD tables")
    parser.add_argument("--k", type=int, default=10_000, help="rows looked up per step")
    parser.add_argument("--devices", type=int, default=8, help="host devices (not with --gpu)")
    parser.add_argument("--gpu", action="store_true", help="use the accelerator's devices")
    parser.add_argument("--loop", type=int, default=0, help="also time N steps in one jit")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--draws", type=int, default=4, help="gradients cycled over")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.gpu:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.devices}"
        )
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from timing import interleaved_times

    import adaptive_tx as atx

    devices = jax.devices()
    n = len(devices)
    mesh = jax.make_mesh((n,), ("rows",), axis_types=(jax.sharding.AxisType.Auto,))
    lr, rng = 1e-3, np.random.default_rng(0)
    print(
        f"{n} x {devices[0].device_kind} ({devices[0].platform}, {os.cpu_count()} cores); "
        f"K = {args.k:,} rows per step; median ms per step over {args.rounds} interleaved rounds"
    )

    def draws(v, d, k):
        return [
            (rng.choice(v, size=k, replace=False).astype(np.int32),
             rng.normal(size=(k, d)).astype(np.float32))
            for _ in range(args.draws)
        ]

    def stepper(step, carry, grads, loop):
        """(one call, N calls in one jitted loop) as zero-argument functions, and the carry
        (donated, replaced at each call)."""
        jitted = jax.jit(step, donate_argnums=(0, 1))
        stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)

        # The gradients are an argument, not a closure: a closed-over array becomes a constant
        # of the compiled loop (2 GB for the dense gradient of an 8M x 64 table).
        def many(params, state, stacked):
            def body(i, c):
                g = jax.tree.map(lambda x: x[i % len(grads)], stacked)
                return step(*c, g)

            return jax.lax.fori_loop(0, loop, body, (params, state))

        jitted_many = jax.jit(many, donate_argnums=(0, 1))
        position = [0]

        def one():
            carry[:] = jitted(*carry, grads[position[0] % len(grads)])
            position[0] += 1
            jax.block_until_ready(carry)

        def looped():
            carry[:] = jitted_many(*carry, stacked)
            jax.block_until_ready(carry)

        return one, looped, carry

    def lazy(tx):
        def step(params, state, g):
            updates, state = tx.update(g, state, params)
            return atx.sparse.apply_updates(params, updates), state

        return step

    for size in args.sizes.split(","):
        v, d = (int(x) for x in size.split("x"))
        k = args.k
        table = np.random.default_rng(1).normal(size=(v, d)).astype(np.float32)
        sample = draws(v, d, k)
        rows = lambda idx, vals, num: {"emb": atx.RowSparse(idx, vals, num)}
        runs = {}

        # row-sharded
        params = {"emb": table}
        sharded = atx.sparse.row_sharded(atx.adam(lr), params, mesh, "rows")
        g_sh = sharded.grad_shardings(rows(*sample[0], v))
        grads = [jax.device_put(rows(i, x, v), g_sh) for i, x in sample]
        p = jax.device_put(params, sharded.param_shardings)
        state = sharded.init(p)
        hlo = jax.jit(sharded.step).lower(p, state, grads[0]).compile().as_text()
        runs["row-sharded"] = stepper(sharded.step, [p, state], grads, args.loop)
        if n > 1:
            # every device steps all K slots: capacity=None, and the fallback (all K ids held
            # by the first device, over its 2 K / n slots)
            every = atx.sparse.row_sharded(atx.adam(lr), params, mesh, "rows", capacity=None)
            p3 = jax.device_put(params, every.param_shardings)
            runs["all K slots"] = stepper(every.step, [p3, every.init(p3)], grads, args.loop)
            skewed = [
                jax.device_put(rows(rng.choice(v // n, size=k, replace=False).astype(np.int32),
                                    x, v), g_sh)
                for _, x in sample
            ]
            p4 = jax.device_put(params, sharded.param_shardings)
            runs["skewed"] = stepper(sharded.step, [p4, sharded.init(p4)], skewed, args.loop)

        # dense sharded: the dense gradient split like the table
        tx = atx.adam(lr)
        dense_sh = sharded.param_shardings
        dense = jax.device_put({"emb": atx.RowSparse(*sample[0], v).todense()}, dense_sh)

        def dense_step(params, state, g):
            updates, state = tx.update(g, state, params)
            return optax.apply_updates(params, updates), state

        p2 = jax.device_put({"emb": table}, dense_sh)
        runs["dense sharded"] = stepper(dense_step, [p2, tx.init(p2)], [dense], args.loop)
        del dense

        # one device's share alone, and the whole table on one device
        chain = optax.chain(atx.sparse.prepare_rows(), atx.adam(lr))
        share = {"emb": jnp.array(table[: v // n])}
        share_grads = [rows(i[: k // n] % (v // n), x[: k // n], v // n) for i, x in sample]
        runs["ideal shard"] = stepper(lazy(chain), [share, chain.init(share)], share_grads,
                                      args.loop)
        if n > 1:
            whole = {"emb": jnp.array(table)}
            whole_grads = [rows(i, x, v) for i, x in sample]
            runs["one device"] = stepper(lazy(chain), [whole, chain.init(whole)], whole_grads,
                                         args.loop)
        del table

        times = interleaved_times({name: fns[0] for name, fns in runs.items()}, args.rounds,
                                  args.warmup)
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        line = " | ".join(f"{name} {ms:.3g} ms" for name, ms in med.items())
        print(f"V = {v:,} x {d}: {line}")
        print(
            f"  row-sharded / ideal shard = {med['row-sharded'] / med['ideal shard']:.2f}, "
            f"dense sharded / row-sharded = {med['dense sharded'] / med['row-sharded']:.1f}"
        )
        for name in ("row-sharded", "skewed"):
            if name in runs:
                stats = runs[name][2][1][2]
                print(f"  {name}: {int(stats.fallback_steps)} steps over the slots of a device "
                      f"(most looked-up rows on one device: {int(stats.most_owned):,})")
        if args.loop:
            for name, (_, looped, _) in runs.items():
                looped()  # compile and warm up
            loop_ms = {}
            for name, (_, looped, _) in runs.items():
                start = _now()
                looped()
                loop_ms[name] = (_now() - start) / args.loop * 1e3
            print("  in one jitted loop of", args.loop, "steps:",
                  " | ".join(f"{name} {ms:.3g} ms" for name, ms in loop_ms.items()))
        sizes = [
            (op, int(np.prod([int(x) for x in dims.split(",") if x] or [1])))
            for dims, op in re.findall(
                r"= \w+\[([\d,]*)\][^ ]* (all-gather|all-reduce|reduce-scatter|all-to-all|"
                r"collective-permute)(?:-start)?\(", hlo)
        ]
        print(f"  row-sharded collectives (elements): {sizes}; the table: {v * d:,}")
        runs.clear()


def _now():
    import time

    return time.perf_counter()


if __name__ == "__main__":
    main()
