"""The README's example and the demo run as written."""

from __future__ import annotations

import math
import pathlib
import re
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_example_trains():
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL).group(1)
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
    } | {("adam", "catch-up")}
    by = {(r["optimizer"], r["mode"]): r for r in results}
    for name in ("sgd", "adagrad"):  # the same updates either way
        assert by[name, "dense"]["curve"] == by[name, "row-sparse"]["curve"]
    assert all(r["ms_per_step"] > 0 and 0 <= r["rare_accuracy"] <= 1 for r in results)
    assert (tmp_path / "sparse_embeddings.png").stat().st_size > 10_000
    # Catch-up Adam on row-sparse gradients evaluates as dense Adam does (curves to float32).
    dense, caught_up = by["adam", "dense"]["curve"], by["adam", "catch-up"]["curve"]
    np.testing.assert_allclose(np.array(caught_up), np.array(dense), atol=0.02)


def test_low_precision_tiny_run():
    """A tiny run of examples/low_precision.py: every setting trains; in bfloat16 parameters,
    round-to-nearest loses small updates and falls behind, stochastic rounding does not."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import low_precision
    finally:
        sys.path.pop(0)
    results = low_precision.main(["--steps", "40", "--seeds", "0", "--hidden", "64"])
    assert set(results) == set(low_precision.SETTINGS)
    fp32 = results["fp32"]["final"][0]
    assert results["fp32"]["lost"][0] == 0.0
    for name in ("bf16_sr", "int8", "all_bf16_sr"):
        assert abs(results[name]["final"][0] / fp32 - 1) < 0.01, name
    assert results["all_bf16"]["lost"][0] > 0.3
    assert results["all_bf16"]["final"][0] > 1.03 * fp32


def test_low_precision_eps_study_tiny_run():
    """The seeds' warning, measured: in float16, eps = 1e-8 rounds to 0 and optax's Adam divides 0
    by 0 on a coordinate that never had a gradient; eps = 1e-5 trains."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import low_precision
    finally:
        sys.path.pop(0)
    table = low_precision.eps_study(
        [0],
        steps=5,
        batch_size=64,
        learning_rate=1e-3,
        hidden=64,
        dtypes=("float16",),
        eps_values=(1e-8, 1e-5),
    )
    assert table[("float16", "optax")][1e-8][1] is not None  # a NaN loss within 5 steps
    for library in ("optax", "adaptive_tx"):
        loss, nan_step = table[("float16", library)][1e-5]
        assert nan_step is None and math.isfinite(loss)


def test_transformer_lm_tiny_run(tmp_path):
    """examples/transformer_lm.py in its tiny configuration: the three runs learn, log the
    per-layer rates, write both figures; the catch-up run ends on the dense run's parameters (to
    float32 rounding, far closer than the lazy run); and a run resumed from its step-20 orbax
    checkpoint ends on the uninterrupted run's parameters, bit for bit."""
    import shutil

    import jax
    import numpy as np

    lm = _example("transformer_lm")
    out = lm.main(["--tiny", str(tmp_path / "a")])
    for path in out["files"]:
        assert path.stat().st_size > 10_000, path
    uniform = math.log(2048)  # --tiny's vocabulary
    by_mode = {r["mode"]: r for r in out["results"]}
    assert set(by_mode) == {"dense", "row-sparse", "catch-up"}
    for r in by_mode.values():
        first, last = r["log"][0], r["log"][-1]
        assert out["optimal_loss"] < last["eval_loss"] < min(first["eval_loss"], uniform)
        assert {"embed/embedding", "head/kernel", "position"} <= set(last["rates"])
        embed = last["rates"]["embed/embedding"]  # over the rows looked up, most of them far below
        assert 0 < embed["min"] <= embed["median"] < 1.0 <= embed["max"]  # an unseen row's eta/eps
        assert r["ms_per_step"] > 0 and r["gradient_ms"] > 0

    # Catch-up: the dense run's embedding table (measured 1.3e-5 apart; lazy 2.5e-2) and loss.
    def table(mode):
        return np.asarray(by_mode[mode]["params"]["embed"]["embedding"].get_value())

    def table_distance(mode):
        return float(np.max(np.abs(table(mode) - table("dense"))))

    assert table_distance("catch-up") < 1e-4 < 1e-2 < table_distance("row-sparse")
    dense_loss = by_mode["dense"]["log"][-1]["eval_loss"]
    assert abs(by_mode["catch-up"]["log"][-1]["eval_loss"] - dense_loss) < 1e-4 * dense_loss

    # Resume: keep only the step-20 checkpoint of the row-sparse run, train steps 21..40 again.
    resumed = tmp_path / "b" / "checkpoints" / "row-sparse"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "row-sparse" / "20", resumed / "20")
    args = lm.parse_args(["--tiny", "--modes", "row-sparse", "--resume", str(tmp_path / "b")])
    (r,), _ = lm.experiment(args)  # the runs without the report and figures
    assert [p["step"] for p in r["log"]] == [30, 40]
    for x, y in zip(
        jax.tree.leaves(by_mode["row-sparse"]["params"]), jax.tree.leaves(r["params"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_newer_methods_tiny_run(tmp_path):
    """ADOPT against AdamW on the rare-large-gradient problem, small: at beta2 = 0.9 AdamW settles
    at the wrong end (x near +1) and ADOPT heads for the optimum -1; with beta2 = 0.999 AdamW
    finds it too."""
    example = _example("newer_methods")
    argv = [str(tmp_path), "--steps", "4000", "--seeds", "2", "--beta2s", "0.9,0.999"]
    result = example.main(argv)
    final = {
        name: {b2: float(example._final(xs).mean()) for b2, xs in by_beta2.items()}
        for name, by_beta2 in result["results"].items()
    }
    assert final["AdamW"][0.9] > 0.5 and final["ADOPT"][0.9] < 0.0
    assert final["AdamW"][0.999] < -0.5
    assert (tmp_path / "newer_methods.png").stat().st_size > 10_000


def test_ftrl_sparsity_tiny_run(tmp_path):
    """examples/ftrl_sparsity.py, tiny: FTRL with L1 keeps most weights exactly 0 (the rarely seen
    ones), Adagrad only those of features never seen; the figure is written."""
    import numpy as np

    ftrl = _example("ftrl_sparsity")
    out = ftrl.main([str(tmp_path), "--tiny"])
    assert (tmp_path / "ftrl_sparsity.png").stat().st_size > 10_000
    l1, adagrad = out["results"]["FTRL + L1"], out["results"]["Adagrad"]
    seen = out["counts"] > 0
    assert np.all(adagrad["w"][seen] != 0) and np.mean(l1["w"][seen] == 0) > 0.5
    rare, common = seen & (out["counts"] <= 2), out["counts"] >= 64
    assert np.mean(l1["w"][rare] == 0) > np.mean(l1["w"][common] == 0) + 0.3
    assert l1["loss"][-1] < l1["loss"][0] and np.isfinite(l1["loss"]).all()
