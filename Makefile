# make test · make demo · make bench — each installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# The benchmark scripts `make bench` runs (benchmarks/<name>.py): adding one is adding its name.
BENCHMARKS := step_time
# Each script prints its table; --write also updates its section of benchmarks/RESULTS.md.
BENCH_FLAGS ?= --write

.PHONY: test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# CPU jax comes from the plain `jax` wheel; torch==2.13.0 is the CPU build (test extra).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,plot]"
	touch $(STAMP)

$(BENCH_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

test: $(STAMP)
	JAX_PLATFORMS=cpu KERAS_BACKEND=jax $(PY) -m pytest -q

demo: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) examples/quickstart.py

bench: $(BENCH_STAMP)
	@set -e; for name in $(BENCHMARKS); do \
		echo "== benchmarks/$$name.py $(BENCH_FLAGS)"; \
		$(PY) benchmarks/$$name.py $(BENCH_FLAGS); \
	done

clean:
	rm -rf $(VENV)
