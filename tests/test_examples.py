"""The README's example and the demo run as written."""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_example_trains():
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    loss_fn, fresh = (
        namespace["loss_fn"],
        namespace["nnx"].Linear(4, 1, rngs=namespace["nnx"].Rngs(0)),
    )
    assert float(loss_fn(namespace["model"])) < 0.5 * float(loss_fn(fresh))


def test_quickstart_tiny_run():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import quickstart
    finally:
        sys.path.pop(0)
    results = quickstart.main(["--steps", "20", "--optimizers", "sgd,adagrad,adam,radam"])
    assert {r["optimizer"] for r in results} == {"sgd", "adagrad", "adam", "radam"}
    for r in results:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["ms_per_step"] > 0
    assert max(r["test_accuracy"] for r in results) > 0.5  # 20 steps already learn something


def test_sparse_embeddings_tiny_run(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import sparse_embeddings
    finally:
        sys.path.pop(0)
    results = sparse_embeddings.main([str(tmp_path), "--tiny"])
    assert {(r["optimizer"], r["mode"]) for r in results} == {
        (name, mode) for name in ("sgd", "adagrad", "adam") for mode in ("dense", "row-sparse")
    }
    by = {(r["optimizer"], r["mode"]): r for r in results}
    for name in ("sgd", "adagrad"):  # the same updates either way
        assert by[name, "dense"]["curve"] == by[name, "row-sparse"]["curve"]
    assert all(r["ms_per_step"] > 0 and 0 <= r["rare_accuracy"] <= 1 for r in results)
    assert (tmp_path / "sparse_embeddings.png").stat().st_size > 10_000
