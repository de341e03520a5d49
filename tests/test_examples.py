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


def _example(name):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_quickstart_tiny_run():
    quickstart = _example("quickstart")
    results = quickstart.main(["--steps", "20", "--optimizers", "sgd,adagrad,adam,radam"])
    assert {r["optimizer"] for r in results} == {"sgd", "adagrad", "adam", "radam"}
    for r in results:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["ms_per_step"] > 0
    assert max(r["test_accuracy"] for r in results) > 0.5  # 20 steps already learn something


def test_sparse_feature_demo_tiny_run(tmp_path):
    """`make demo` in a tiny configuration: the table and the four figures."""
    demo = _example("sparse_feature_demo")
    result = demo.main(["--tiny", "--out", str(tmp_path)])
    for name in result["files"]:
        assert (tmp_path / name).stat().st_size > 10_000, name
    rows = {name: (common, rare) for name, _, _, common, rare in result["rows"]}
    assert rows["SGD"][0] == rows["SGD"][1]  # one global rate
    assert rows["Adagrad"][1] > 2 * rows["Adagrad"][0]  # the rare coordinate keeps a larger rate
    rates = result["nonstationary"]
    assert rates["RMSProp"][-1] > 10 * rates["Adagrad"][-1]  # RMSProp recovered, Adagrad did not


def test_sparse_embeddings_tiny_run(tmp_path):
    sparse_embeddings = _example("sparse_embeddings")
    results = sparse_embeddings.main([str(tmp_path), "--tiny"])
    assert {(r["optimizer"], r["mode"]) for r in results} == {
        (name, mode) for name in ("sgd", "adagrad", "adam") for mode in ("dense", "row-sparse")
    }
    by = {(r["optimizer"], r["mode"]): r for r in results}
    for name in ("sgd", "adagrad"):  # the same updates either way
        assert by[name, "dense"]["curve"] == by[name, "row-sparse"]["curve"]
    assert all(r["ms_per_step"] > 0 and 0 <= r["rare_accuracy"] <= 1 for r in results)
    assert (tmp_path / "sparse_embeddings.png").stat().st_size > 10_000
