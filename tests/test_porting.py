"""docs/porting_from_torch.md runs, and its parameter groups equal torch.optim's param_groups; the
presets are reachable as the docs write them; torch's positional params get an error with the fix."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import optax
import pytest
import torch

import adaptive_tx as atx
from tests.cases import max_rel_diff
from tests.test_docs import ROOT, run_page

SHAPES = {"embed": {"embedding": (10, 3)}, "norm": {"scale": (3,)}, "head": {"kernel": (3, 2)}}


@pytest.fixture(scope="module")
def page():
    return run_page("porting_from_torch.md")


def _params_and_grads(steps=5):
    rng = np.random.default_rng(0)
    params = {k: {n: rng.normal(size=s).astype(np.float32) for n, s in v.items()}
              for k, v in SHAPES.items()}
    grads = [
        {k: {n: rng.normal(size=s).astype(np.float32) for n, s in v.items()}
         for k, v in SHAPES.items()}
        for _ in range(steps)
    ]
    return params, grads


def _ours(tx, params, grads):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _torch(make_optimizer, params, grads):
    tensors = {k: {n: torch.tensor(a, requires_grad=True) for n, a in v.items()}
               for k, v in params.items()}
    optimizer = make_optimizer(tensors)
    for g in grads:
        for k, v in tensors.items():
            for n, t in v.items():
                t.grad = torch.tensor(g[k][n])
        optimizer.step()
    return {k: {n: t.detach().numpy() for n, t in v.items()} for k, v in tensors.items()}


def test_no_decay_on_biases_equals_torch_param_groups(page):
    params, grads = _params_and_grads()

    def groups(t):
        decay = [t["embed"]["embedding"], t["head"]["kernel"]]
        return torch.optim.AdamW(
            [{"params": decay}, {"params": [t["norm"]["scale"]], "weight_decay": 0.0}],
            lr=1e-3, weight_decay=1e-2,
        )

    def one_group(t):  # decay on every parameter: 5e-5 away after 5 steps
        return torch.optim.AdamW([p for v in t.values() for p in v.values()], lr=1e-3,
                                 weight_decay=1e-2)

    ours = _ours(page["tx_no_decay_on_biases"], params, grads)
    assert max_rel_diff(ours, _torch(groups, params, grads)) <= 2e-6
    assert max_rel_diff(ours, _torch(one_group, params, grads)) > 2e-5


def test_each_groups_rate_is_read_from_its_inner_state(page):
    """The page's last sentence: a group's effective learning rate, from its inner state."""
    params, grads = _params_and_grads(steps=1)
    tx = page["tx_no_decay_on_biases"]
    _, state = tx.update(grads[0], tx.init(params), params)
    rates = atx.effective_learning_rate(state.inner_states["decay"].inner_state)
    # step 1: the first moment d = (1 - b1) g and the update is -lr sign(g), so rate * |d| = lr
    d = 0.1 * grads[0]["head"]["kernel"].astype(np.float64)
    np.testing.assert_allclose(rates["head"]["kernel"] * np.abs(d), 1e-3, rtol=1e-4)
    assert isinstance(rates["norm"]["scale"], optax.MaskedNode)


def test_embedding_learning_rate_equals_torch_param_groups(page):
    params, grads = _params_and_grads()

    def groups(t):
        return torch.optim.Adam(
            [{"params": [t["embed"]["embedding"]], "lr": 1e-2},
             {"params": [t["norm"]["scale"], t["head"]["kernel"]]}],
            lr=1e-3,
        )

    expected = _torch(groups, params, grads)
    ours = _ours(page["tx_embed_lr"], params, grads)
    assert max_rel_diff(ours, expected) <= 2e-5
    assert max_rel_diff(ours, _ours(atx.compat.torch.Adam(lr=1e-3), params, grads)) > 1e-3


def test_masked_alias_decays_only_matrices(page):
    params, grads = _params_and_grads()
    masked = _ours(page["tx_masked"], params, grads)
    plain = _ours(optax.adam(1e-3), params, grads)
    decayed = _ours(optax.adamw(1e-3, weight_decay=1e-2), params, grads)
    assert max_rel_diff(masked["norm"], plain["norm"]) == 0
    assert max_rel_diff(masked["head"], decayed["head"]) <= 1e-6


def test_every_preset_the_docs_name_exists():
    """``atx.compat.torch.X`` / ``atx.compat.keras.X`` as the pages and the README write them."""
    texts = [p.read_text() for p in [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]]
    named = {m for t in texts for m in re.findall(r"atx\.compat\.(?:torch|keras)\.\w+", t)}
    assert len(named) >= 7
    for dotted in sorted(named):
        module, name = dotted.split(".")[2:]
        assert callable(getattr(getattr(atx.compat, module), name)), dotted


def test_compat_is_reachable_as_the_docs_write_it_without_importing_torch_or_keras():
    code = (
        "import sys, adaptive_tx as atx\n"
        "atx.compat.torch.AdamW(lr=1e-3); atx.compat.keras.Adam(learning_rate=1e-3)\n"
        "from adaptive_tx.compat import torch as atx_torch\n"
        "assert atx_torch is atx.compat.torch\n"
        "heavy = [m for m in ('torch', 'keras', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={"JAX_PLATFORMS": "cpu", "PATH": ""})


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam",
                                  "RAdam", "SparseAdam"])
def test_torch_positional_params_are_refused_with_the_fix(name):
    preset = getattr(atx.compat.torch, name)
    params = {"w": np.zeros(3, np.float32)}
    for args, kwargs in [((params,), {"lr": 1e-3}), ((params,), {}), (([params["w"]],), {})]:
        with pytest.raises(TypeError, match=rf"compat.torch.{name} takes no params: .*tx.init"):
            preset(*args, **kwargs)
    preset(1e-3)  # a positional learning rate is still a learning rate
    preset(optax.linear_schedule(1e-3, 0.0, 10))
