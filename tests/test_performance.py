"""The compiled step: memory traffic no larger than optax's, state updated in place, rule traced once.

The step-time benchmark (benchmarks/step_time.py) times the step; these tests pin down what makes it
fast and can be checked on any machine: the fusions XLA emits and the bytes they move (XLA's own cost
analysis of the compiled step), and the buffers the donated state is written to.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adaptive_tx as atx
from tests.cases import gradient_stream, make_params, max_rel_diff, run

_spec = importlib.util.spec_from_file_location(
    "step_time", Path(__file__).resolve().parent.parent / "benchmarks" / "step_time.py"
)
step_time = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step_time)


def compiled_step(tx, leaves):
    params = step_time.split(np.ones(1 << 12, np.float32), leaves)
    return step_time.jax_step(tx).lower(params, tx.init(params), params).compile()


@pytest.mark.parametrize("leaves", [1, 3])
@pytest.mark.parametrize("method", step_time.METHODS)
def test_compiled_step_moves_no_more_than_optax_and_updates_in_place(method, leaves):
    ours = step_time.analyze(compiled_step(getattr(atx, method)(1e-3), leaves), 4 << 12)
    theirs = step_time.analyze(compiled_step(step_time.optax_twin(method)(1e-3), leaves), 4 << 12)
    assert ours.in_place, "a state buffer is not updated in place under donation"
    # optax's novograd runs its step in two lax.cond (first step or not): their fusions are in
    # the branches, which `analyze` does not count (ENTRY only), so only the arrays compare.
    if method != "novograd":
        assert ours.fusions <= theirs.fusions
    assert ours.arrays <= theirs.arrays + 0.05  # scalars (counts, hyperparameters) aside
    # No step moves less than the ideal: read p, g and the statistics, write p and the statistics.
    assert ours.arrays >= step_time.roofline_arrays(method) - 0.05


def test_roofline_counts_the_arrays_of_each_rule():
    # Adam: read p, g, m, v and write p, m, v. Adagrad: read p, g, G and write p, G.
    assert step_time.roofline_arrays("adam") == 7
    assert step_time.roofline_arrays("adagrad") == 5


class TotalState(NamedTuple):
    count: jax.Array
    total: optax.Updates


def test_rule_is_traced_once_per_leaf_shape_not_per_leaf():
    traced = []
    rule = atx.Rule(
        initial=(0.0,),
        accumulate=lambda g, s, t: (traced.append(g.shape) or s[0] + g,),
        direction=lambda g, s, t: g,
        scale=lambda s, t: 1.0,
    )

    tx = atx.dense_transformation(rule, TotalState)
    params = {f"w{i}": jnp.zeros((4,) if i % 2 else (2, 3)) for i in range(40)}
    jax.jit(tx.update)(params, tx.init(params))
    assert sorted(traced) == [(2, 3), (4,)]


def test_flattened_state_matches_optax():
    """optax.flatten keeps the state in one vector: the many-leaves option (docs/performance.md)."""
    params, grads = make_params(), gradient_stream(30)
    ours, state, _ = run(optax.flatten(atx.adam(0.01)), params, grads)
    theirs, _, _ = run(optax.adam(0.01), params, grads)
    assert state[0].mu.shape == (sum(p.size for p in params.values()),)  # one flat vector
    assert max_rel_diff(ours[-1], theirs[-1]) <= 1e-5


def test_benchmark_quick_mode_times_every_contender_and_rewrites_only_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    other = "<!-- other:begin -->\nanother benchmark's table\n<!-- other:end -->\n"
    results.write_text("# Benchmark results\n\n" + other)
    argv = ["--quick", "--methods", "adam", "rmsprop", "--write", "--results", str(results)]
    rows = step_time.main(argv)
    assert [(r["config"].method, r["config"].size, r["config"].leaves) for r in rows] == [
        (m, 1 << e, n) for m in ("adam", "rmsprop") for e in (12, 14) for n in (1, 8)
    ]
    for row in rows:
        expected = {"axpy", "adaptive_tx", "optax"}
        if step_time.torch_device() is not None:
            expected |= {"torch foreach"} | (
                {"torch fused"} if row["config"].method == "adam" else set()
            )
        assert set(row["medians"]) == expected
        assert all(t > 0 for t in row["medians"].values()) and row["bandwidth"] > 0
    assert "| adam | 2^14 | 8 |" in results.read_text()
    # A second run replaces the section (and only it) instead of adding one.
    step_time.main(
        ["--methods", "adagrad", "--sizes", "10", "--leaves", "1", "--repeats", "1"]
        + ["--no-torch", "--write", "--results", str(results)]
    )
    text = results.read_text()
    assert text.count(step_time.BEGIN) == 1 and text.count(step_time.END) == 1
    assert other in text
    assert "| adagrad | 2^10 | 1 |" in text and "| adam |" not in text


def test_storage_benchmark_quick_mode_times_every_storage_against_float32():
    """`--storages` times every lean storage on each model in the same rounds as float32 state;
    its floor row (linear 8-bit codes, a measuring rod, not a storage to train with) keeps a
    statistic to within half a step of its grid, 1/254 of the block's absolute maximum."""
    rows = step_time.main(["--storages", "--quick", "--no-torch"])
    models = ["one leaf 2^12", "transformer (19 leaves)"]
    names = [name for name, _, _ in step_time.STORAGES]
    assert [(r["model"], r["storage"]) for r in rows] == [(m, n) for m in models for n in names]
    assert all(r["ms"] > 0 and r["compile"] > 0 and r["ratio"] > 0 for r in rows)
    by_name = {(r["model"], r["storage"]): r for r in rows}
    assert by_name[(models[0], "int8_blockwise")]["bytes_ratio"] < 0.3  # ~1 byte in 4
    floor = step_time.LinearBlockwise(min_size=0)
    x = jax.random.normal(jax.random.key(0), (3, 300)) * jnp.array([[1.0], [1e-3], [0.0]])
    stored = floor.init(x, 0.0)
    stored = floor.encode(x, stored, None)
    blocks_max = np.abs(np.asarray(x)).reshape(3, 300)  # blocks: [0, 256), [256, 300)
    scale = np.concatenate(
        [np.repeat(blocks_max[:, :256].max(1, keepdims=True), 256, 1),
         np.repeat(blocks_max[:, 256:].max(1, keepdims=True), 44, 1)], axis=1,
    )  # fmt: skip
    np.testing.assert_array_less(np.abs(stored.widen() - x), scale / 254 * (1 + 1e-6) + 1e-30)
    assert float(jnp.abs(stored.widen()[2]).max()) == 0.0


def _distinct_fusions(hlo: str) -> int:
    """How many different fused computations a compiled HLO module holds, names and the order of
    their instructions and parameters aside."""
    bodies = set()
    for computation in re.split(r"\n\n", hlo):
        if computation.lstrip().startswith("%fused"):
            body = re.sub(r", metadata=\{[^}]*\}", "", computation.split("\n", 1)[1])
            body = re.sub(r"parameter\(\d+\)", "parameter()", re.sub(r"%[\w.\-]+", "%x", body))
            bodies.add(tuple(sorted(body.split("\n"))))
    return len(bodies)


@pytest.mark.parametrize("spec", ["bfloat16_sr", "float8_e4m3fn_blockwise"])
def test_lean_state_compiles_one_kernel_per_leaf_shape_not_per_leaf(spec):
    """Stochastic rounding keys each leaf differently; the key must reach the leaf's kernel as a
    run-time value, or every leaf compiles its own kernel (compile time grows with the leaves)."""
    tx = atx.adam(1e-3, mu_dtype=spec, nu_dtype=spec)
    distinct = []
    for leaves in (1, 3):
        params = {f"w{i}": jnp.ones((16, 256)) for i in range(leaves)}
        hlo = step_time.jax_step(tx).lower(params, tx.init(params), params).compile().as_text()
        distinct.append(_distinct_fusions(hlo))
    assert distinct[1] == distinct[0], distinct
