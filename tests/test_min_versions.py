"""The fast subset that `make test-min` runs with exactly the declared minimum versions.

It needs only the runtime dependencies (jax, optax, flax, chex) and pytest: no torch, keras or
matplotlib. It covers what a new user touches first, each against an independent reference: the
README example, every alias against its optax twin (one row each), the row-sparse path through
``flax.nnx`` against dense optax, and the effective-learning-rate summary against NumPy. In the main
suite (``make test``) only the README example runs here; the other checks are main-suite tests.
"""

from __future__ import annotations

import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import adaptive_tx as atx
from tests.cases import (
    DEFAULTS,
    case_id,
    gradient_stream,
    make_params,
    max_rel_diff,
    optax_twin,
    run,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
# `make test-min` sets it. In the main suite, the tests below that repeat a main-suite test run
# there instead (the same checks at the current versions): they are marked `min_versions_only`.
MIN_VERSIONS = os.environ.get("ATX_MIN_VERSIONS") == "1"


def min_versions_only(covered_by: str):
    return pytest.mark.skipif(not MIN_VERSIONS, reason=f"in the main suite: {covered_by}")


def _readme_example() -> str:
    """The Python block under README.md's "## Example" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Example\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_and_lowers_the_loss():
    namespace: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    model, loss_fn = namespace["model"], namespace["loss_fn"]
    start = nnx.Linear(4, 1, rngs=nnx.Rngs(0))  # the example's initial model
    assert float(loss_fn(model)) < 0.5 * float(loss_fn(start))


@min_versions_only("tests/test_aliases.py::test_matches_optax_over_100_steps")
@pytest.mark.parametrize("row", DEFAULTS, ids=case_id)
def test_alias_matches_optax(row):
    name, kwargs = row
    params, grads = make_params(), gradient_stream(40)
    ours = run(getattr(atx, name)(**kwargs), params, grads)[0][-1]
    theirs = run(optax_twin(name)(**kwargs), params, grads)[0][-1]
    assert max_rel_diff(ours, params) > 1e-2, "the parameters did not move"
    assert max_rel_diff(ours, theirs) <= 1e-5


class _Bag(nnx.Module):
    def __init__(self, embed, rngs: nnx.Rngs):
        self.embed = embed(20, 3, rngs=rngs)
        self.out = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, tokens):
        return self.out(self.embed(tokens).mean(axis=1))


def _loss(model, tokens, labels):
    return optax.softmax_cross_entropy_with_integer_labels(model(tokens), labels).mean()


@min_versions_only("tests/test_sparse.py::test_nnx_optimizer_with_row_sparse_grads_equals_dense_adagrad")
def test_row_sparse_adagrad_in_nnx_optimizer_equals_dense_optax():
    """Row-sparse Adagrad is the dense result (untouched rows have zero gradients)."""
    tokens = jax.random.randint(jax.random.key(0), (6, 4), 0, 12)  # rows 12..19 never touched
    labels = jnp.arange(6) % 2
    model, twin = _Bag(atx.sparse.Embed, nnx.Rngs(1)), _Bag(nnx.Embed, nnx.Rngs(1))
    opt = nnx.Optimizer(model, atx.adagrad(0.5), wrt=nnx.Param)
    opt2 = nnx.Optimizer(twin, optax.adagrad(0.5), wrt=nnx.Param)
    for t in range(3):
        batch = jnp.roll(tokens, t)
        _, grads = atx.sparse.value_and_grad(_loss)(model, batch, labels)
        opt.update(model, grads)
        _, grads2 = nnx.value_and_grad(_loss)(twin, batch, labels)
        opt2.update(twin, grads2)
    ours, theirs = nnx.state(model, nnx.Param), nnx.state(twin, nnx.Param)
    assert max_rel_diff(ours, theirs, floor=1e-2) <= 1e-5
    assert max_rel_diff(ours, nnx.state(_Bag(nnx.Embed, nnx.Rngs(1)), nnx.Param)) > 1e-3


@min_versions_only("tests/test_diagnostics.py::test_summary_matches_numpy_under_jit")
def test_effective_learning_rate_summary_matches_numpy():
    """Adagrad's rate η/√(G + ε) from the summed squares, summarized per leaf."""
    params, grads = make_params(), gradient_stream(5)
    tx = atx.adagrad(0.1, initial_accumulator_value=0.1, eps=1e-7)
    state = run(tx, params, grads)[1]
    summary = jax.jit(atx.effective_learning_rate_summary, static_argnums=1)(state, 0.05)
    for name in params:
        squares = 0.1 + sum(np.asarray(g[name], np.float64) ** 2 for g in grads)
        rate = 0.1 / np.sqrt(squares + 1e-7)
        got = summary[name]
        np.testing.assert_allclose(
            [got.min, got.median, got.max, got.mean],
            [rate.min(), np.median(rate), rate.max(), rate.mean()],
            rtol=1e-5,
        )
        assert float(got.fraction_below) == pytest.approx(np.mean(rate < 0.05))
