"""compat.torch presets against torch.optim (CPU): same float32 parameters and gradient stream.

One table, TORCH, of (optimizer name, torch keyword arguments) drives the parity tests: every
preset with its defaults (but a learning rate large enough to move the parameters), then a grid
of non-default settings. CONVENTIONS names, for the rows
where a convention shows, the primitive option that carries it: switching it to optax's value
must move the trajectory far from torch's, so the parity test can tell the conventions apart.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np
import optax
import pytest
import torch

from adaptive_tx.compat import torch as presets
from tests.cases import gradient_stream, make_params, max_rel_diff
from tests.compat_checks import (
    FLOOR,
    STEPS,
    TOL,
    check_preset,
    force_option,
    row_id,
    run_ours,
    stack,
)

SCHEDULE = optax.linear_schedule(0.05, 0.005, transition_steps=STEPS)

TORCH = [
    ("Adagrad", dict(lr=0.1)),
    (
        "Adagrad",
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-3),
    ),
    ("Adagrad", dict(lr=SCHEDULE, lr_decay=0.05, eps=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(alpha=0.9, eps=0.1, momentum=0.9, centered=True, foreach=True)),
    ("RMSprop", dict(lr=SCHEDULE, momentum=0.5, weight_decay=0.05, eps=1e-3)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=SCHEDULE, amsgrad=True, maximize=True, foreach=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, eps=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    ("Adamax", dict(lr=0.02)),
    ("Adamax", dict(lr=0.01, betas=(0.5, 0.9), eps=1e-2, weight_decay=0.1, maximize=True)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.1, weight_decay=0.1)),
    (
        "NAdam",
        dict(lr=0.01, betas=(0.95, 0.99), momentum_decay=0.0, weight_decay=0.1, eps=1e-3)
        | dict(decoupled_weight_decay=True),
    ),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, eps=0.1)),
    ("RAdam", dict(lr=SCHEDULE, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.5, eps=1e-3, weight_decay=0.1, maximize=True, foreach=True)),
    ("Rprop", dict()),
    # lr above the largest step size: torch clamps it at the first step
    ("Rprop", dict(lr=0.5, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2), maximize=True)),
]

# (row of TORCH, primitive the preset calls, option, the value that gives optax's convention)
CONVENTIONS = [
    (TORCH[2], "scale_by_sum_of_squares", "eps_in_sqrt", True),
    (TORCH[4], "scale_by_ema_of_squares", "eps_in_sqrt", True),
    (TORCH[7], "scale_by_bias_corrected_moments", "amsgrad_raw_max", False),
    (TORCH[15], "scale_by_bias_corrected_moments", "momentum_decay", None),
    (TORCH[18], "scale_by_rectified_moments", "eps_hat", False),
    (TORCH[-1], "scale_by_rprop", "clamp_unchanged", False),
]


@pytest.fixture(scope="module")
def problem():
    return make_params(), gradient_stream(STEPS)


def run_torch(name, kwargs, params, grads):
    """Every iterate of torch.optim.<name> over the stream, as one stacked array per leaf."""
    kwargs = dict(kwargs)
    schedule = kwargs.get("lr") if callable(kwargs.get("lr")) else None
    if schedule is not None:
        kwargs["lr"] = float(schedule(0))
    tensors = {k: torch.tensor(np.asarray(v)) for k, v in params.items()}
    optimizer = getattr(torch.optim, name)(list(tensors.values()), **kwargs)
    iterates = []
    for t, g in enumerate(grads):
        if schedule is not None:
            for group in optimizer.param_groups:
                group["lr"] = float(schedule(t))
        for k, tensor in tensors.items():
            tensor.grad = torch.tensor(np.asarray(g[k]))
        optimizer.step()
        iterates.append({k: v.detach().numpy().copy() for k, v in tensors.items()})
    return stack(iterates)


def is_plain(name, kwargs):
    """No weight decay, momentum or sign flip, and a stored direction (not NAdam's look-ahead)."""
    extra = {"weight_decay", "momentum", "maximize"} & {k for k, v in kwargs.items() if v}
    default_decay = name == "AdamW" and "weight_decay" not in kwargs
    return not extra and not default_decay and name != "NAdam"


@pytest.mark.parametrize("row", TORCH, ids=row_id)
def test_matches_torch_over_100_steps(row, problem):
    name, kwargs = row
    params, grads = problem
    theirs = run_torch(name, kwargs, params, grads)
    check_preset(getattr(presets, name)(**kwargs), theirs, params, grads, is_plain(name, kwargs))


@pytest.mark.parametrize(
    "row,primitive,option,optax_value",
    CONVENTIONS,
    ids=[f"{row_id(c[0])}-{c[2]}" for c in CONVENTIONS],
)
def test_convention_is_visible(row, primitive, option, optax_value, problem, monkeypatch):
    """With the option at optax's value the preset is far from torch: the row tests it."""
    name, kwargs = row
    params, grads = problem
    force_option(monkeypatch, presets, primitive, option, optax_value)
    ours, _ = run_ours(getattr(presets, name)(**kwargs), params, grads)
    assert max_rel_diff(ours, run_torch(name, kwargs, params, grads), FLOOR) > 100 * TOL


@pytest.mark.parametrize("name", sorted({name for name, _ in TORCH} | {"SparseAdam"}))
def test_signature_matches_torch(name):
    """torch's keyword names, defaults and kinds, less `params` (an Optax state holds no params)."""
    theirs = list(inspect.signature(getattr(torch.optim, name).__init__).parameters.values())[2:]
    ours = inspect.signature(getattr(presets, name)).parameters.values()
    assert [(p.name, p.default, p.kind) for p in ours] == [
        (p.name, p.default, p.kind) for p in theirs
    ]


@pytest.mark.parametrize(
    "name", ["Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"]
)
def test_kernel_options_are_ignored(name, problem):
    """foreach / fused / capturable / differentiable choose torch kernels: the same updates."""
    params, grads = problem
    kernel_options = {"foreach", "fused", "capturable", "differentiable"}
    names = kernel_options & set(inspect.signature(getattr(presets, name)).parameters)
    plain = getattr(presets, name)(lr=0.01)
    flagged = getattr(presets, name)(lr=0.01, **{option: True for option in names})
    s1, s2 = plain.init(params), flagged.init(params)
    for g in grads[:3]:
        u1, s1 = plain.update(g, s1, params)
        u2, s2 = flagged.update(g, s2, params)
        jax.tree.map(np.testing.assert_array_equal, u1, u2)


@pytest.mark.parametrize("name", ["Adam", "RMSprop"])
def test_inject_hyperparams_equals_plain(name, problem):
    params, grads = problem
    kwargs = dict(lr=0.01, weight_decay=0.1, maximize=True) | (
        dict(momentum=0.9) if name == "RMSprop" else dict(amsgrad=True)
    )
    plain, _ = run_ours(getattr(presets, name)(**kwargs), params, grads[:10])
    injected, state = run_ours(
        optax.inject_hyperparams(getattr(presets, name))(**kwargs), params, grads[:10]
    )
    assert max_rel_diff(injected, plain, FLOOR) <= 1e-5
    assert state.hyperparams["lr"] == np.float32(0.01)


# (optimizer, kwargs, exception, text the message must contain)
BAD = [
    ("Adam", dict(lr=-0.1), ValueError, "lr"),
    ("Adam", dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\]=1.0"),
    ("AdamW", dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\]=-0.1"),
    ("NAdam", dict(betas=(0.9,)), ValueError, "pair"),
    ("RAdam", dict(eps=-1e-8), ValueError, "eps"),
    ("Adamax", dict(weight_decay=-0.1), ValueError, "weight_decay"),
    ("NAdam", dict(momentum_decay=-1.0), ValueError, "momentum_decay"),
    ("RMSprop", dict(alpha=1.0), ValueError, "alpha=1.0"),
    ("RMSprop", dict(momentum=-0.5), ValueError, "momentum=-0.5"),
    ("Adagrad", dict(lr_decay=-0.1), ValueError, "lr_decay"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), ValueError, "initial_accumulator_value"),
    ("Adam", dict(nesterov=True), TypeError, "nesterov"),
    ("Adam", dict(momentum=0.9), TypeError, "momentum"),
]


@pytest.mark.parametrize("name,kwargs,error,text", BAD, ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_invalid_or_unsupported_options_raise(name, kwargs, error, text):
    with pytest.raises(error, match=text):
        getattr(presets, name)(**kwargs)


def test_complex_parameters_raise_naming_the_leaf():
    tx = presets.Adam()
    with pytest.raises(TypeError, match=r"\['z'\].*split_real_and_imaginary"):
        tx.init({"w": np.zeros(2, np.float32), "z": np.zeros(2, np.complex64)})


SPARSE_ADAM = [
    dict(lr=1e-2),
    dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-2),  # eps large enough for the eps-hat form to show
    dict(lr=1e-2, maximize=True),
]


@pytest.mark.parametrize("kwargs", SPARSE_ADAM, ids=str)
def test_sparse_adam_matches_torch_over_100_steps(kwargs):
    """Zipf rows (repeats, rare rows) as torch sparse COO gradients and as RowSparse leaves."""
    from adaptive_tx import sparse

    rng = np.random.default_rng(7)
    num_rows, dim, lookups = 50, 4, 12
    table = rng.normal(size=(num_rows, dim)).astype(np.float32)
    theirs = torch.nn.Parameter(torch.tensor(table))
    torch_opt = torch.optim.SparseAdam([theirs], **kwargs)
    tx = presets.SparseAdam(**kwargs)
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (sparse.apply_updates(p, u), s))(*tx.update(g, s, p))
    )
    params, state = jax.numpy.asarray(table), tx.init(jax.numpy.asarray(table))
    ours, expected = [], []
    for _ in range(STEPS):
        indices = rng.zipf(1.5, size=lookups).clip(max=num_rows) - 1
        values = rng.normal(size=(lookups, dim)).astype(np.float32)
        theirs.grad = torch.sparse_coo_tensor(
            torch.tensor(indices)[None], torch.tensor(values), (num_rows, dim)
        )
        torch_opt.step()
        params, state = step(params, state, sparse.RowSparse(indices, values, num_rows))
        ours.append(np.asarray(params))
        expected.append(theirs.detach().numpy().copy())
    assert max_rel_diff(expected[-1], table, FLOOR) > 1e-2
    assert max_rel_diff(np.stack(ours), np.stack(expected), FLOOR) <= TOL


def test_sparse_adam_rejects_dense_gradients():
    tx = presets.SparseAdam()
    params = {"emb": jax.numpy.zeros((4, 2))}
    with pytest.raises(TypeError, match=r"gradient \['emb'\] is dense"):
        tx.update(params, tx.init(params), params)
