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
