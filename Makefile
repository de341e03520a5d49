# make test · make demo · make bench — each installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# CPU jax comes from the plain `jax` wheel; torch==2.13.0 is the CPU build (test extra).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,plot]"
	touch $(STAMP)

test: $(STAMP)
	JAX_PLATFORMS=cpu KERAS_BACKEND=jax $(PY) -m pytest -q

# The sparse-feature lab: effective learning rates per coordinate, figures in out/demo/.
demo: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) examples/sparse_feature_demo.py --out out/demo

# Row-sparse steps against dense optax.adam and torch.optim.SparseAdam (~4 GB of memory, minutes).
bench: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) benchmarks/sparse_rows.py

clean:
	rm -rf $(VENV)
