"""Sharded state on 8 virtual CPU devices: each statistic sharded like its parameter.

The runs happen in a subprocess (tests/sharded_run.py) started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, since the device count is fixed when jax
starts. The expected partition specs below are written out by hand from the layout each storage
promises (full-size statistics like the parameter; factored and per-block means along the axes
that survive; 8-bit block scales along the block axis when it divides evenly).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import adaptive_tx as atx
from tests import sharded_run
from tests.cases import case_id

ROOT = pathlib.Path(__file__).resolve().parents[1]
AB = ["a", "b"]  # both mesh axes: split 8 ways
PARAMS = {"w": ["a", "b"], "emb": [AB, None], "b": [AB], "s": []}


def _like_params(field):
    return {f"{field}['{k}']": spec for k, spec in PARAMS.items()}


EXPECTED = {
    "adam": {**_like_params("[0].mu"), **_like_params("[0].nu")},
    "adam_bf16_sr": {**_like_params("[0].mu"), **_like_params("[0].nu")},
    "adam_int8": {
        **_like_params("[0].mu.codes"),
        **_like_params("[0].nu.codes"),
        **{
            f"[0].{moment}.scales['{k}']": spec
            # w: (512, 4 blocks) splits 2 x 4; emb: (1024, 1 block); b: 16 blocks over 8 devices
            for moment in ("mu", "nu")
            for k, spec in {"w": ["a", "b"], "emb": [AB, None], "b": [AB], "s": []}.items()
        },
    },
    "adafactor": {
        # w (512, 1024): rows average the largest axis (1) away, columns axis 0
        "[0].nu.row['w']": ["a", None],
        "[0].nu.col['w']": [None, "b"],
        # emb (1024, 256): the largest axis is 0
        "[0].nu.row['emb']": [None, None],
        "[0].nu.col['emb']": [AB, None],
        # vectors are kept whole, in `row`
        "[0].nu.row['b']": [AB],
        "[0].nu.row['s']": [],
    },
    "adam_mini": {
        **_like_params("[0].mu"),
        "[0].nu['w']": [None, "b"],
        "[0].nu['emb']": [None, None],
        "[0].nu['b']": [None],
        "[0].nu['s']": [],
    },
}
# Sharded and single-device runs: elementwise steps agree to float32 rounding; means over a split
# axis are summed in another order.
TOLERANCE = {
    "adam": 1e-6,
    "adam_bf16_sr": 1e-6,
    "adam_int8": 1e-6,
    "adafactor": 1e-5,
    "adam_mini": 1e-5,
}


@pytest.fixture(scope="module")
def results():
    env = dict(
        os.environ,
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    out = subprocess.run(
        [sys.executable, "-m", "tests.sharded_run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _trim(spec):
    spec = list(spec)
    while spec and spec[-1] is None:
        spec.pop()
    return spec


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_state_leaves_are_sharded_like_their_parameters(results, name):
    result = results[name]
    assert result["devices"] == 8
    for specs in (result["init_specs"], result["step_specs"]):
        for path, spec in EXPECTED[name].items():
            assert _trim(specs[path]) == _trim(spec), (path, specs[path])
        for path, spec in specs.items():  # the rest: counters and hyperparameters, replicated
            small = result["sizes"][path] <= 1 or path.endswith(".packed_hyperparams")
            if path not in EXPECTED[name] and not (small and _trim(spec) == []):
                pytest.fail(f"unexpected state leaf {path} with spec {spec}")
    assert all(_trim(result["param_specs"][f"['{k}']"]) == _trim(s) for k, s in PARAMS.items())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_full_size_statistic_is_replicated(results, name):
    result = results[name]
    # Full-size leaves (every parameter here has >= 4096 coordinates, every factored or per-block
    # mean <= 1024) are split over all 8 devices; a mean is copied along the axes it averaged away.
    sizes = result["sizes"]
    big = {path: n for path, n in result["copies"].items() if sizes[path] >= 4096}
    assert big and all(copies == 1 for copies in big.values()), big
    if name in ("adam", "adam_bf16_sr", "adam_int8"):  # only the scalars are copied 8 times
        assert result["bytes_sharded"] - result["bytes_single"] < 1000


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sharded_steps_equal_the_single_device_run(results, name):
    result = results[name]
    assert result["max_diff_params"] <= TOLERANCE[name]
    assert result["max_diff_state"] <= TOLERANCE[name]


def test_param_shardings_must_be_named_shardings():
    params = {"w": np.zeros((4, 4), np.float32)}
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with pytest.raises(TypeError, match="param_shardings must be a tree of .*NamedSharding"):
        atx.state_shardings(atx.adam(1e-3), params, {"w": single})


# --- explicit mesh axes (jax.set_mesh): sharding is part of an array's type ---------------------


def _leaf_types(tree):
    """{path: type string} of a JSON'd tree of type strings."""
    return {jax.tree_util.keystr(p): t for p, t in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("name", sorted(sharded_run._explicit_cases()))
def test_explicit_axes_state_keeps_the_types_init_gave_it(results, name):
    """Every alias x storage, row-wise Adagrad and both adafactors: the state from an eager init,
    a jitted init and update have the same shapes, dtypes and shardings (else a
    ``jit(fori_loop(update))`` does not trace), and every full-size statistic is sharded like its
    parameter."""
    result = results["explicit"][name]
    assert "error" not in result, result.get("error")
    assert result["init"] == result["jit_init"] == result["update"]
    if "run" in result:  # compiled and run two steps
        assert result["run"] == result["init"] and result["finite"]
    params = {k[2:-2]: t for k, t in _leaf_types(result["params"]).items()}
    shapes = {k: t[t.index("[") :] for k, t in params.items()}
    for path, leaf_type in _leaf_types(result["init"]).items():
        key = next((k for k in params if f"['{k}']" in path), None)
        shape = leaf_type[leaf_type.index("[") :]
        if key and shape.replace("@x", "") == shapes[key].replace("@x", ""):
            assert shape == shapes[key], (path, leaf_type, params[key])


def test_explicit_axes_grid_covers_every_alias_and_storage(results):
    names = set(results["explicit"])
    # every alias with every storage that applies to its statistics (sharded_run._explicit_case)
    expected = {f"{case_id(row)}|float32" for row in sharded_run.STORAGE_ROWS}
    expected |= {f"{case_id(row)}|int8_blockwise" for row in sharded_run.STORAGE_ROWS}
    extra = {"rowwise_adagrad", "adafactor", "optax.adafactor", "ftrl"}
    expected |= {case_id(row) for row in sharded_run.OWN_STORAGE_ROWS}
    assert expected | extra | set(sharded_run.EXPLICIT_RUN) <= names
    assert all("run" in results["explicit"][n] for n in sharded_run.EXPLICIT_RUN)
