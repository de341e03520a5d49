"""The benchmarks run end to end on tiny shapes (their figures are measured by hand)."""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_sparse_rows_tiny_run():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import sparse_rows
    finally:
        sys.path.pop(0)
    results = sparse_rows.main(
        ["--rows", "2000", "--dim", "8", "--ks", "10,100", "--big-rows", "4000", "--big-k", "50"]
        + ["--rounds", "3", "--warmup", "1", "--draws", "2"]
    )
    assert [row["k"] for row in results["table"]] == [10, 100]
    for row in results["table"]:
        assert all(row[name] > 0 for name in sparse_rows.CONTENDERS)
    assert set(results["v_check"]) == {"lazy adam", "rowwise adagrad"}
    assert all(check["ratio"] > 0 for check in results["v_check"].values())


def test_guard_compile_tiny_run():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import guard_compile
    finally:
        sys.path.pop(0)
    rows = guard_compile.main(["--tiny"])
    assert [row["leaves"] for row in rows] == [3, 6]
    for row in rows:
        assert all(row[f"{name} compile"] > 0 for name in guard_compile.CONTENDERS)
        assert row["ratio"] > 0


def test_profile_step_tiny_run():
    """The per-kernel profile reads every kernel of the step back from a profiler trace."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import profile_step
    finally:
        sys.path.pop(0)
    results = profile_step.main(["--storages", "float32", "int8_blockwise", "--size", "12"])
    assert set(results) == {"float32", "int8_blockwise"}
    for result in results.values():
        assert sum(result["times"].values()) > 0  # seconds per step, kernel by kernel
        assert result["kernels"] >= 1 and result["temp_mb"] >= 0
    # the 8-bit step reduces each new statistic over its blocks: more kernels than float32's
    assert results["int8_blockwise"]["kernels"] > results["float32"]["kernels"]
