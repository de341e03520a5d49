"""Optimizer states round-trip through orbax.checkpoint, and a run resumed in a fresh process is
bitwise the uninterrupted run.

For every alias (tests/cases.py DEFAULTS), the guarded Adam (NaN batches on both sides of the
checkpoint) and an injected-hyperparameters Adam: train 50 steps and save params and state, go on to
step 100 here; a fresh Python process restores the checkpoint, checks it, trains the same 50 steps
and writes its result; both must be equal bit for bit. One child process serves all cases.

Beyond the aliases: every storage (bfloat16, "bfloat16_sr", "int8_blockwise", Factored, BlockMean),
both adafactors, row-wise Adagrad and prepare_rows on row-sparse gradients (STATE_CASES).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import adaptive_tx as atx
from adaptive_tx.compat import keras as compat_keras
from tests.cases import DEFAULTS, case_id, gradient_stream, make_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, SAVE_AT = 100, 50
NAN_STEPS = (20, 70)  # for the guarded case: one bad batch before the checkpoint, one after


INT8_ALL = atx.Int8Blockwise(min_size=0)  # the small test leaves quantized too
# Every storage and every transformation with a state of its own, beyond the aliases' defaults.
# The model's leaves are all under 4096 coordinates and 128 rows: int8_blockwise keeps them whole
# (a (1,) placeholder for the scales), Factored() keeps them unfactored (a (1,) placeholder for
# the column means); a zero-size array there made orbax refuse to save.
STATE_CASES = {
    "adamw(int8_blockwise)": lambda: atx.adamw(
        0.01, mu_dtype="int8_blockwise", nu_dtype="int8_blockwise"
    ),
    "adam(int8 every leaf, bfloat16_sr)": lambda: atx.adam(
        0.01, mu_dtype=INT8_ALL, nu_dtype="bfloat16_sr"
    ),
    "adam(bfloat16, BlockMean)": lambda: atx.adam(
        0.01, mu_dtype=jnp.bfloat16, nu_dtype=atx.BlockMean(axes=(0,))
    ),
    "adafactor": lambda: atx.adafactor(0.01),
    "adafactor(factored)": lambda: atx.adafactor(0.01, min_dim_size_to_factor=2),
    "keras.Adafactor": lambda: compat_keras.Adafactor(0.01),
    "rowwise_adagrad": lambda: atx.rowwise_adagrad(0.1),
    "ftrl(l1) on rows": lambda: atx.ftrl(0.1, l1_regularization_strength=0.5),
    "prepare_rows(adam) on rows": lambda: optax.chain(atx.sparse.prepare_rows(), atx.adam(0.01)),
    "skip_nonfinite(adam)": lambda: atx.skip_nonfinite(atx.adam(0.01), max_consecutive_errors=3),
    "inject_hyperparams(adam)": lambda: optax.inject_hyperparams(atx.adam)(
        learning_rate=0.01, b1=0.8
    ),
}


def _make(case: str) -> optax.GradientTransformation:
    if case in STATE_CASES:
        return STATE_CASES[case]()
    name, kwargs = next(row for row in DEFAULTS if case_id(row) == case)
    return getattr(atx, name)(**kwargs)


CASES = [case_id(row) for row in DEFAULTS] + list(STATE_CASES)


def _as_rows(t: int, g: np.ndarray) -> atx.RowSparse:
    """Three rows of the table's gradient (one repeated), as a row-sparse leaf."""
    rows = np.array([t % 10, (t + 3) % 10, (t + 3) % 10])
    return atx.RowSparse(rows, g[rows], num_rows=g.shape[0])


def _grads(case: str) -> list:
    grads = gradient_stream(STEPS)
    if case.startswith("skip_nonfinite"):
        for t in NAN_STEPS:
            grads[t] = jax.tree.map(lambda g: np.full_like(g, np.nan), grads[t])
    if case.endswith("on rows"):
        grads = [{**g, "emb": _as_rows(t, g["emb"])} for t, g in enumerate(grads)]
    return grads


def _apply(params, updates):
    return atx.sparse.apply_updates(params, updates)


def _stepper(tx):
    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return _apply(params, updates), state

    return step


def _leaves(params, state) -> list[np.ndarray]:
    """Every array as NumPy; bfloat16 as its bits (np.savez has no bfloat16)."""
    as_np = [np.asarray(x) for x in jax.tree.leaves((params, state))]
    return [x.view(np.uint16) if x.dtype == jnp.bfloat16 else x for x in as_np]


def resume(directory: str) -> None:
    """The child process: restore each case's checkpoint, train to step 100, save the leaves."""
    directory = pathlib.Path(directory)
    checkpointer = ocp.StandardCheckpointer()
    for i, case in enumerate(CASES):
        tx, params = _make(case), make_params()
        target = {"params": params, "state": jax.eval_shape(tx.init, params)}
        restored = checkpointer.restore(directory / str(i), target)
        params, state = restored["params"], restored["state"]
        state = atx.check_restored_state(tx, params, state)
        step = _stepper(tx)
        for g in _grads(case)[SAVE_AT:]:
            params, state = step(params, state, g)
        np.savez(directory / f"{i}.npz", *_leaves(params, state))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{case: (uninterrupted leaves, resumed leaves)}, all cases trained here and in one child."""
    directory = tmp_path_factory.mktemp("checkpoints")
    uninterrupted = {}
    with ocp.StandardCheckpointer() as checkpointer:
        for i, case in enumerate(CASES):
            tx, params = _make(case), make_params()
            state, step = tx.init(params), _stepper(tx)
            for t, g in enumerate(_grads(case)):
                if t == SAVE_AT:
                    checkpointer.save(directory / str(i), {"params": params, "state": state})
                params, state = step(params, state, g)
            uninterrupted[case] = _leaves(params, state)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys; from tests.test_checkpoint import resume; resume(sys.argv[1])"
    child = subprocess.run(
        [sys.executable, "-c", code, str(directory)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    resumed = {}
    for i, case in enumerate(CASES):
        with np.load(directory / f"{i}.npz") as saved:
            resumed[case] = [saved[f"arr_{k}"] for k in range(len(saved.files))]
    return {case: (uninterrupted[case], resumed[case]) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_resumed_in_a_fresh_process_equals_uninterrupted_bitwise(runs, case):
    uninterrupted, resumed = runs[case]
    assert len(resumed) == len(uninterrupted)
    for a, b in zip(uninterrupted, resumed):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # bitwise (NaN-free: the guard kept them out)
    # assert_array_equal calls NaN equal to NaN: make sure there is none (an Inf may be a
    # hyperparameter on purpose, e.g. NAdam's momentum_decay = inf for optax's constant momentum).
    assert not any(np.any(np.isnan(x)) for x in uninterrupted if x.dtype.kind == "f")
    if case.startswith("skip_nonfinite"):
        skipped = optax.tree.get(_restructure(case, resumed), "skipped")
        assert int(skipped) == len(NAN_STEPS)


def _restructure(case, leaves):
    """The leaves back in the (params, state) tree of `case`."""
    tx, params = _make(case), make_params()
    return jax.tree.unflatten(jax.tree.structure((params, tx.init(params))), leaves)[1]


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint of adam(0.1, mu_dtype=bfloat16) after one step, and its params."""
    tx, params = atx.adam(0.1, mu_dtype=jnp.bfloat16), make_params()
    _, state = tx.update(gradient_stream(1)[0], tx.init(params), params)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "state": state})
    return tmp_path / "ckpt", tx, params


def test_restore_without_a_target_is_a_readable_error(checkpoint):
    path, tx, params = checkpoint
    restored = ocp.StandardCheckpointer().restore(path)  # plain dicts and lists
    with pytest.raises(ValueError, match=r"the state's tree does not match tx.init\(params\)"):
        atx.check_restored_state(tx, params, restored["state"])


def test_restored_state_of_another_optimizer_names_the_leaf_and_dtypes(checkpoint):
    path, writer, params = checkpoint
    target = {"params": params, "state": jax.eval_shape(writer.init, params)}
    restored = ocp.StandardCheckpointer().restore(path, target)
    reader = atx.adam(0.1)  # float32 moments
    with pytest.raises(
        TypeError, match=r"\[0\]\.mu\['b'\] has dtype bfloat16 but .* gives float32"
    ):
        atx.check_restored_state(reader, params, restored["state"])
    # With the reader's own target, orbax casts on restore and the layout is right.
    target = {"params": params, "state": jax.eval_shape(reader.init, params)}
    restored = ocp.StandardCheckpointer().restore(path, target)
    atx.check_restored_state(reader, params, restored["state"])
