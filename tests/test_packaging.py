"""What a user installs: the import's cost, and the contents of the built sdist and wheel."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

import adaptive_tx

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What an sdist must carry so that its tests run, besides the package.
SDIST_TREES = ("adaptive_tx", "tests", "docs", "examples", "benchmarks")
NOT_SHIPPED = re.compile(r"(__pycache__|\.pyc$|\.png$|^docs/_generated/)")


def test_import_needs_no_flax_torch_keras_or_matplotlib():
    """``import adaptive_tx`` (and its presets) costs what optax costs plus the library's own
    modules: flax is imported by the row-sparse nnx helpers and the nnx-state unwrapping only when
    they are used (benchmarks/import_time.py measures the time)."""
    code = (
        "import sys, adaptive_tx as atx\n"
        "atx.compat.torch.Adam\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}\n"
        "               & {'flax', 'torch', 'keras', 'matplotlib', 'orbax'})\n"
        "print(','.join(heavy))\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    assert out.stdout.strip() == "", f"import adaptive_tx imported {out.stdout.strip()}"


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist built from a copy of this checkout, and the wheel built from that sdist (as pip
    builds it), with the setuptools of this environment (no network)."""
    tmp = tmp_path_factory.mktemp("dist")
    source = tmp / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", "out", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
            ".pytest_cache", "_generated",
        ),
    )
    build = (
        "import sys; from setuptools import build_meta as backend\n"
        "print(getattr(backend, sys.argv[1])(sys.argv[2]))\n"
    )

    def backend(step, cwd, out):
        done = subprocess.run(
            [sys.executable, "-c", build, step, str(out)],
            cwd=cwd, check=True, capture_output=True, text=True,
        )
        return out / done.stdout.strip().splitlines()[-1]

    sdist = backend("build_sdist", source, tmp)
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "unpacked", filter="data")
    wheel = backend("build_wheel", tmp / "unpacked" / sdist.name[: -len(".tar.gz")], tmp)
    return sdist, wheel


def test_sdist_carries_the_tests_and_everything_they_read(dists):
    sdist, _ = dists
    version = adaptive_tx.__version__
    assert sdist.name == f"adaptive_tx-{version}.tar.gz"
    prefix = f"adaptive_tx-{version}/"
    with tarfile.open(sdist) as archive:
        names = {n[len(prefix):] for n in archive.getnames() if n.startswith(prefix)}
    expected = {
        path.relative_to(ROOT).as_posix()
        for tree in SDIST_TREES
        for path in (ROOT / tree).rglob("*")
        if path.is_file()
    }
    expected = {p for p in expected if not NOT_SHIPPED.search(p)}
    assert {"tests/cases.py", "tests/compat_checks.py", "tests/reference/__init__.py"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"the sdist lacks {missing}"
    assert {"LICENSE", "README.md", "pyproject.toml", "adaptive_tx/py.typed"} <= names


def test_wheel_is_the_typed_package_with_its_license_and_one_version(dists):
    _, wheel = dists
    version = adaptive_tx.__version__
    assert wheel.name.startswith(f"adaptive_tx-{version}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"adaptive_tx-{version}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    modules = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "adaptive_tx").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules | {"adaptive_tx/py.typed"} <= names
    assert not any(n.startswith(("tests/", "docs/", "examples/", "benchmarks/")) for n in names)
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert re.search(r"^License-Expression: Apache-2\.0$", metadata, re.M)
    assert re.search(rf"^Version: {re.escape(version)}$", metadata, re.M)
    # the floors that make test-min installs
    for floor in ("jax>=0.10.0", "flax>=0.12.7", "optax>=0.2.5", "chex>=0.1.87"):
        assert re.search(rf"^Requires-Dist: {re.escape(floor)}$", metadata, re.M), floor
