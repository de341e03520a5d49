"""Training on several processes with JAX's distributed runtime, optimizer state sharded (FSDP).

Starts ``--num_processes`` Python processes on this machine, each with ``--local_devices`` CPU
devices, joined by ``jax.distributed.initialize`` (a coordinator on 127.0.0.1 at a free port
chosen at run time; CPU collectives through gloo). Together they train a small ``flax.nnx`` model
whose parameters are split over all devices along one axis (fully sharded data parallel), with
Adam whose state is laid out like the parameters (`adaptive_tx.state_shardings`), once for each
kind of state storage (float32, bfloat16, stochastically rounded bfloat16, 8-bit blockwise,
factored and per-block second moments). Every process feeds its own part of each batch and of
each array (``jax.make_array_from_callback``); the step is one jitted program over the global
mesh. An orbax checkpoint of the parameters and states is written by all processes together and
can be restored by any number of processes (orbax reshards on restore).

The launcher kills every process when one fails or when the time limit passes, and its error
names the process and shows the end of its stderr. On a cluster, run the worker part (this file
with ``--process_id``) once per host with the coordinator's address instead.

Run it with::

    python examples/distributed_training.py                          # 2 processes x 4 devices
    python examples/distributed_training.py --num_processes 1 --local_devices 8   # one process
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

STEPS = 3
BATCH, SEQ, VOCAB, WIDTH = 16, 4, 64, 16
STORAGES = ("float32", "bfloat16", "bfloat16_sr", "int8_blockwise", "factored", "block_mean")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- launcher -------------------------------------------------------------------------------------


def launch(argv: list[str], num_processes: int, timeout: float, env: dict | None = None) -> str:
    """Runs this script as `num_processes` worker processes and returns process 0's stdout.

    Raises ``RuntimeError`` naming each process that failed (its exit code and the end of its
    stderr), or those still running when `timeout` seconds have passed; every process still
    running is killed first, so a process waiting on a dead peer never outlives the call.
    """
    port = free_port()
    env = dict(os.environ if env is None else env)
    env.setdefault("JAX_PLATFORMS", "cpu")
    root = str(pathlib.Path(__file__).resolve().parents[1])  # this checkout's adaptive_tx
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    logs = pathlib.Path(tempfile.mkdtemp(prefix="distributed_"))
    procs = []
    try:
        for i in range(num_processes):
            command = [sys.executable, os.path.abspath(__file__), *argv]
            command += ["--num_processes", str(num_processes), "--process_id", str(i)]
            command += ["--port", str(port)]
            out, err = open(logs / f"{i}.out", "w"), open(logs / f"{i}.err", "w")
            procs.append(subprocess.Popen(command, stdout=out, stderr=err, env=env))
            out.close(), err.close()
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        running = [i for i, p in enumerate(procs) if p.poll() is None]
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
    failed = [i for i, p in enumerate(procs) if p.returncode != 0 and i not in running]
    if failed or running:
        tail = lambda i: (logs / f"{i}.err").read_text()[-3000:]
        lines = [f"process {i} exited with code {procs[i].returncode}:\n{tail(i)}" for i in failed]
        lines += [
            f"process {i} still running after {timeout:.0f} s, killed:\n{tail(i)}" for i in running
        ]
        raise RuntimeError("distributed run failed\n" + "\n".join(lines))
    return (logs / "0.out").read_text()


# --- worker ---------------------------------------------------------------------------------------


def _optimizer(storage: str):
    import adaptive_tx as atx

    if storage == "factored":
        return atx.adam(1e-2, nu_dtype=atx.Factored(min_dim_size_to_factor=2))
    if storage == "block_mean":
        return atx.adam(1e-2, nu_dtype=atx.BlockMean(axes=(0,)))
    spec = atx.Int8Blockwise(min_size=0) if storage == "int8_blockwise" else storage
    return atx.adam(1e-2, mu_dtype=spec, nu_dtype=spec)


def _model():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(VOCAB, WIDTH, rngs=rngs)
            self.hidden = nnx.Linear(WIDTH, 32, rngs=rngs)
            self.out = nnx.Linear(32, 8, rngs=rngs)

        def __call__(self, ids):
            x = self.embed(ids).mean(axis=1)
            return self.out(nnx.relu(self.hidden(x)))

    return Model(nnx.Rngs(0))


def _fsdp_spec(shape, axis="fsdp", size=8):
    """Split the first axis that the devices divide; a small leaf stays whole."""
    from jax.sharding import PartitionSpec as P

    for dim, n in enumerate(shape):
        if n % size == 0:
            return P(*([None] * dim + [axis]))
    return P()


def setup(mesh, storages):
    """The model's graph, its initial parameters (NumPy), their FSDP shardings on `mesh`, one Adam
    per storage, the sharding of each (params, state) pair, and the jitted init of all pairs."""
    import jax
    from flax import nnx
    from jax.sharding import NamedSharding

    import adaptive_tx as atx

    graphdef, host_params = nnx.split(_model(), nnx.Param)
    host_params = jax.tree.map(np.asarray, nnx.to_pure_dict(host_params))
    p_sh = jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(x.shape)), host_params)
    txs = {name: _optimizer(name) for name in storages}
    tree_sh = {
        name: (p_sh, atx.state_shardings(tx, host_params, p_sh)) for name, tx in txs.items()
    }
    init = jax.jit(
        lambda p: {name: (p, tx.init(p)) for name, tx in txs.items()}, out_shardings=tree_sh
    )
    return graphdef, host_params, p_sh, txs, tree_sh, init


def train(args) -> dict[str, Any]:
    """Trains the model for every storage and handles the checkpoints; returns the gathered
    parameters and states (NumPy) by storage and leaf path, and the first step's gradient."""
    import jax
    import jax.numpy as jnp
    import optax
    import orbax.checkpoint as ocp
    from flax import nnx
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding

    auto = (jax.sharding.AxisType.Auto,)  # the compiler places the collectives
    mesh = jax.make_mesh((jax.device_count(),), ("fsdp",), axis_types=auto)
    graphdef, host_params, p_sh, txs, tree_sh, init = setup(mesh, args.storages)
    batch_sh = NamedSharding(mesh, _fsdp_spec((BATCH,)))
    # Each process supplies the blocks of the global array that its devices hold.
    put = lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index])

    def loss_fn(params, ids, targets):
        model = nnx.merge(graphdef, nnx.State(params))
        return optax.l2_loss(model(ids), targets).mean()

    def step(trees, ids, targets):
        new, first_grads = {}, None
        for name, (params, state) in trees.items():
            grads = jax.grad(loss_fn)(params, ids, targets)
            first_grads = grads if first_grads is None else first_grads
            updates, state = txs[name].update(grads, state, params)
            new[name] = (optax.apply_updates(params, updates), state)
        return new, first_grads

    trees = init(jax.tree.map(put, host_params, p_sh))
    step = jax.jit(
        step,
        in_shardings=(tree_sh, batch_sh, batch_sh),
        out_shardings=(tree_sh, p_sh),
        donate_argnums=0,
    )
    rng, first_grads = np.random.default_rng(0), None
    for _ in range(args.steps):
        ids = rng.integers(0, VOCAB, (BATCH, SEQ)).astype(np.int32)
        targets = rng.normal(size=(BATCH, 8)).astype(np.float32)
        trees, grads = step(trees, put(ids, batch_sh), put(targets, batch_sh))
        first_grads = grads if first_grads is None else first_grads

    widen = lambda x: x.astype(np.float32) if x.dtype == jnp.bfloat16 else x  # exact; for .npz
    gather = lambda tree: {
        jax.tree_util.keystr(path): widen(np.asarray(leaf))
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            multihost_utils.process_allgather(tree, tiled=True)
        )[0]
    }
    result = {"trained": gather(trees), "first_grads": gather(first_grads)}
    if args.restore:
        target = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), trees, tree_sh
        )
        with ocp.StandardCheckpointer() as checkpointer:
            result["restored"] = gather(checkpointer.restore(os.path.abspath(args.restore), target))
    if args.save:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.abspath(args.save), trees)
            checkpointer.wait_until_finished()
    return result


def worker(args) -> None:
    if args.process_id == args.fail_process:
        raise SystemExit(f"process {args.process_id}: failing on purpose (--fail_process)")
    if args.process_id == args.hang_process:
        time.sleep(3600)
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.local_devices)
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"127.0.0.1:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=60,
        )
    result = train(args)
    if jax.process_index() == 0 and args.out:
        arrays = {f"{k}|{p}": v for k, tree in result.items() for p, v in tree.items()}
        arrays["processes"], arrays["devices"] = jax.process_count(), jax.device_count()
        np.savez(args.out, **arrays)
    if jax.process_index() == 0:
        summary = {
            name: float(np.abs(result["trained"][f"['{name}'][0]['out']['kernel']"]).sum())
            for name in args.storages
        }
        print(json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                          "sum |out.kernel|": summary}))
    if args.num_processes > 1:
        jax.distributed.shutdown()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--local_devices", type=int, default=4)
    parser.add_argument("--storages", type=lambda s: s.split(","), default=list(STORAGES))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--save", default="", help="write an orbax checkpoint to this folder")
    parser.add_argument("--restore", default="", help="restore this checkpoint after training")
    parser.add_argument("--out", default="", help="process 0 writes the results here (.npz)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--process_id", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fail_process", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--hang_process", type=int, default=-1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The options each worker process gets (the launcher adds its id and the port)."""
    argv = ["--local_devices", str(args.local_devices), "--storages", ",".join(args.storages)]
    argv += ["--steps", str(args.steps), "--fail_process", str(args.fail_process)]
    argv += ["--hang_process", str(args.hang_process)]
    for name in ("save", "restore", "out"):
        if getattr(args, name):
            argv += [f"--{name}", os.path.abspath(getattr(args, name))]
    return argv


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.process_id is not None:
        return worker(args)
    print(launch(worker_argv(args), args.num_processes, args.timeout).strip().splitlines()[-1])


if __name__ == "__main__":
    main()
