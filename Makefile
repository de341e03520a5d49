# make test · make demo · make docs · make bench — each installs what it needs into .venv.
# make test-min — the declared minimum versions, in .venv-min (CI runs it after make test).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
MIN_VENV := .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_STAMP := $(MIN_VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: test test-min demo docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# CPU jax comes from the plain `jax` wheel; torch==2.13.0 is the CPU build (test extra).
# --no-compile: Python compiles the modules the tests import when they import them, not the
# thousands of torch, keras and jax files they never do.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --no-compile -e ".[test,plot]"
	touch $(STAMP)

$(BENCH_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

$(DOCS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

# Two pytest workers (pytest-xdist), one test file each at a time: module fixtures run once.
# The suite compiles a few thousand small programs whose run time is negligible, so XLA's LLVM
# optimisation is turned down for it and XLA CPU's loop emitters replace its newer fusion emitters
# (TEST_XLA_FLAGS): together about half the CPU time. Results can differ from the default build in
# the last bits (a different code path for some elementwise functions); every tolerance in the
# suite is between programs compiled alike, and the tests that compare two programs bit for bit
# or read the compiled HLO compile with XLA's default emitters (tests/cases.py DEFAULT_CODEGEN).
# `make test TEST_XLA_FLAGS=` runs the suite with XLA's defaults.
TEST_XLA_FLAGS := --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true \
	--xla_cpu_use_fusion_emitters=false
test: $(STAMP)
	XLA_FLAGS="$(TEST_XLA_FLAGS) $(XLA_FLAGS)" JAX_PLATFORMS=cpu KERAS_BACKEND=jax \
	  $(PY) -m pytest -q -n 2 --dist loadfile

# The fast subset (tests/test_min_versions.py) with exactly pyproject.toml's floors: CPU jax, no
# torch, keras or matplotlib. The package is installed without resolving its dependencies again.
$(MIN_STAMP): pyproject.toml .ci/min_requirements.py
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install --quiet --upgrade pip
	$(PYTHON) .ci/min_requirements.py pyproject.toml > $(MIN_VENV)/requirements-min.txt
	$(MIN_PY) -m pip install --quiet -r $(MIN_VENV)/requirements-min.txt pytest
	$(MIN_PY) -m pip install --quiet --no-deps -e .
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_PY) -m pip check
	ATX_MIN_VERSIONS=1 JAX_PLATFORMS=cpu $(MIN_PY) -m pytest -q tests/test_min_versions.py

# The sparse-feature lab: effective learning rates per coordinate, figures in out/demo/.
demo: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) examples/sparse_feature_demo.py --out out/demo

# The documentation site in out/docs/ (warnings are errors); runs the demo for its figures.
docs: $(DOCS_STAMP)
	JAX_PLATFORMS=cpu $(PY) -m sphinx -W --keep-going -b html docs out/docs

# Every benchmark, each printing its table (minutes; the row-sparse one needs ~4 GB of memory).
# step_time --write also rewrites its own section of benchmarks/RESULTS.md.
bench: $(BENCH_STAMP)
	$(PY) benchmarks/step_time.py --write
	$(PY) benchmarks/sparse_rows.py
	$(PY) benchmarks/soak.py

clean:
	rm -rf $(VENV) $(MIN_VENV)
