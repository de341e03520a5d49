"""Two processes joined by ``jax.distributed`` train as one process with the same 8 devices.

examples/distributed_training.py is the program under test: it trains a ``flax.nnx`` model with
FSDP-sharded parameters and Adam state (`adaptive_tx.state_shardings`), once per state storage
(float32, bfloat16, bfloat16_sr, int8_blockwise, factored, block_mean), all in one jitted step.
It runs twice, in subprocesses: one process with 8 CPU devices (writing an orbax checkpoint), then
ONE launch of 2 processes x 4 CPU devices (gloo collectives, a coordinator on a free port) that
trains, restores the first run's checkpoint and writes its own; this process (1 device) restores
that one. The launcher kills all processes when one fails or the time limit passes and names the
failed process with its stderr (tested with a process that fails and one that hangs).

Tolerance: the two runs compile the same program, but the gradient's all-reduce over the 8
devices sums in another order under gloo (ring) than inside one process, so the first gradients
already differ by float32 rounding (checked: a few ulp), and Adam's normalised steps carry that
relative error into parameters and moments (1e-5 relative after 3 steps). A statistic kept in
bfloat16 or 8-bit codes can round those few ulps to neighbouring values of its grid: one unit
apart on a few coordinates (`_assert_state_leaf_close`). Checkpoints restore bit for bit.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh

from tests.cases import max_rel_diff

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import distributed_training as example  # noqa: E402

sys.path.remove(str(ROOT / "examples"))

TIMEOUT = 600  # seconds per launch; a loaded 2-core machine needs ~100 s for the 2-process run
TOLERANCE = 1e-5  # relative, floor 1e-3: see the module docstring
GRAD_TOLERANCE = 1e-6  # a few float32 ulp


def _launch(num_processes, local_devices, **options):
    args = example.parse(
        ["--num_processes", str(num_processes), "--local_devices", str(local_devices)]
        + [f"--{k}={v}" for k, v in options.items()]
    )
    # make test's code generation (Makefile TEST_XLA_FLAGS): compiling is most of the run's time;
    # every run compiles alike.
    flags = (
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        " --xla_cpu_use_fusion_emitters=false"
    )
    env = dict(os.environ, XLA_FLAGS=flags)
    example.launch(example.worker_argv(args), num_processes, TIMEOUT, env=env)
    return dict(np.load(args.out)) if args.out else None


def _tree(arrays, kind, storage=None):
    prefix = f"{kind}|" + ("" if storage is None else f"['{storage}']")
    return {k: v for k, v in arrays.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("distributed")
    single = _launch(1, 8, save=d / "from_one", out=d / "one.npz")
    multi = _launch(2, 4, save=d / "from_two", restore=d / "from_one", out=d / "two.npz")
    return {"single": single, "multi": multi, "dir": d}


def test_two_processes_are_two_processes_of_eight_devices(runs):
    assert (int(runs["multi"]["processes"]), int(runs["multi"]["devices"])) == (2, 8)
    assert (int(runs["single"]["processes"]), int(runs["single"]["devices"])) == (1, 8)


def _assert_state_leaf_close(multi, single, key):
    """A state leaf within TOLERANCE, but for a few coordinates one unit of its stored grid apart.

    A statistic kept in bfloat16 or 8-bit codes is rounded (to nearest or stochastically) from a
    float32 value, and the two runs' float32 values differ by a few ulps (the all-reduce's order):
    where one lies within those ulps of a rounding boundary, the two runs keep neighbouring values
    of the grid. That happens to ~few ulps / grid spacing of the coordinates (2^-16 of them for
    bfloat16), so at most 1 % of a leaf's coordinates, each one unit apart: a bfloat16 unit
    (2^-7 relative at most) or one 8-bit code.
    """
    a, b = np.asarray(multi).astype(np.float64), np.asarray(single).astype(np.float64)
    far = np.abs(a - b) > TOLERANCE * np.maximum(np.abs(b), 1e-3)
    assert far.sum() <= max(1, 0.01 * far.size), (key, int(far.sum()), far.size)
    if np.issubdtype(np.asarray(multi).dtype, np.integer):  # 8-bit codes
        assert np.all(np.abs(a[far] - b[far]) <= 1), key
    else:
        unit = 2.0**-7 * np.maximum(np.abs(a[far]), np.abs(b[far]))
        assert np.all(np.abs(a[far] - b[far]) <= unit), key


@pytest.mark.parametrize("storage", example.STORAGES)
def test_two_processes_train_as_one_process(runs, storage):
    multi = _tree(runs["multi"], "trained", storage)
    single = _tree(runs["single"], "trained", storage)
    assert multi.keys() == single.keys() and len(multi) >= 10  # params and every state leaf
    params = [k for k in multi if k.startswith(f"trained|['{storage}'][0]")]
    assert params and max_rel_diff(
        {k: multi[k] for k in params}, {k: single[k] for k in params}, floor=1e-3
    ) <= TOLERANCE
    for key in sorted(set(multi) - set(params)):
        _assert_state_leaf_close(multi[key], single[key], key)
    # and the run did train: every parameter moved from its initial value (3 Adam steps of 1e-2)
    _, host_params, *_ = example.setup(Mesh(np.array(jax.devices()[:1]), ("fsdp",)), [])
    for path, initial in jax.tree_util.tree_flatten_with_path(host_params)[0]:
        moved = multi[f"trained|['{storage}'][0]{jax.tree_util.keystr(path)}"] - initial
        assert np.abs(moved).max() > 1e-3, path


def test_first_gradients_differ_by_rounding_only(runs):
    multi, single = _tree(runs["multi"], "first_grads"), _tree(runs["single"], "first_grads")
    assert multi.keys() == single.keys() and multi
    assert max_rel_diff(multi, single, floor=1e-3) <= GRAD_TOLERANCE


def test_checkpoint_written_by_one_process_restores_in_two(runs):
    restored, trained = _tree(runs["multi"], "restored"), _tree(runs["single"], "trained")
    assert len(restored) == len(trained) > 0
    for key, value in trained.items():
        np.testing.assert_array_equal(restored["restored" + key[len("trained") :]], value)


def test_checkpoint_written_by_two_processes_restores_in_one(runs):
    mesh = Mesh(np.array(jax.devices()[:1]), ("fsdp",))
    *_, tree_sh, init = example.setup(mesh, example.STORAGES)
    shapes = jax.eval_shape(init, example.setup(mesh, [])[1])
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, tree_sh
    )
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(runs["dir"] / "from_two", target)
    trained = _tree(runs["multi"], "trained")
    leaves = jax.tree_util.tree_flatten_with_path(restored)[0]
    assert len(leaves) == len(trained)
    for path, leaf in leaves:
        expected = trained[f"trained|{jax.tree_util.keystr(path)}"]
        np.testing.assert_array_equal(np.asarray(leaf), expected)


def test_launcher_kills_every_process_when_one_fails():
    """Process 1 fails at once; process 0 would wait for it in jax.distributed.initialize."""
    start = time.monotonic()
    args = example.parse(["--fail_process", "1"])
    with pytest.raises(RuntimeError, match="(?s)process 1 exited with code 1:.*failing on purpose"):
        example.launch(example.worker_argv(args), 2, TIMEOUT)
    assert time.monotonic() - start < 60  # not the coordinator's 60 s initialization timeout


def test_launcher_kills_processes_that_hang():
    args = example.parse(["--hang_process", "1"])
    with pytest.raises(RuntimeError, match="(?s)process 0 still running after 3 s, killed.*"
                                           "process 1 still running"):
        example.launch(example.worker_argv(args), 2, 3)
