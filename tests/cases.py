"""The one table of optimizers that drives the property and parity tests, and the gradient stream.

A new method is one row: (alias name, keyword arguments). Each alias has an optax twin of the same
name and signature, which is the independent reference for parity.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adaptive_tx as atx

SCHEDULE = optax.linear_schedule(0.05, 0.005, transition_steps=100)
WD_SCHEDULE = optax.cosine_decay_schedule(0.1, decay_steps=100)
# AdEMAMix's warm-ups (the paper's shape, over this table's 100 steps).
ALPHA_SCHEDULE = optax.linear_schedule(0.0, 5.0, transition_steps=50)
B3_SCHEDULE = optax.linear_schedule(0.9, 0.999, transition_steps=50)


def _mask(params):
    return {name: name != "b" for name in params}


# (alias, kwargs). learning_rate is always given; the rest is a grid of non-default settings.
ALIASES = [
    ("adagrad", dict(learning_rate=0.1)),
    ("adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.0, eps=1e-10)),
    ("adagrad", dict(learning_rate=SCHEDULE, initial_accumulator_value=1.0, eps=1e-3)),
    ("rmsprop", dict(learning_rate=0.01)),
    ("rmsprop", dict(learning_rate=0.01, decay=0.5, eps=1e-3, eps_in_sqrt=False)),
    ("rmsprop", dict(learning_rate=0.01, centered=True, initial_scale=1.0)),
    # (centered with bias_correction and eps outside the root is ill-conditioned at its first step,
    # in optax as here: tests/test_reference.py::test_centered_first_step_variance_is_not_nan)
    ("rmsprop", dict(learning_rate=0.01, centered=True, eps_in_sqrt=False, eps=0.1)),
    ("rmsprop", dict(learning_rate=0.01, momentum=0.9, nesterov=True, bias_correction=True)),
    ("rmsprop", dict(learning_rate=SCHEDULE, momentum=0.5, initial_scale=0.1)),
    ("adam", dict(learning_rate=0.01)),
    ("adam", dict(learning_rate=0.01, b1=0.5, b2=0.9, eps=1e-3, eps_root=1e-6)),
    ("adam", dict(learning_rate=SCHEDULE, b1=0.0, nesterov=True)),
    ("adamw", dict(learning_rate=0.01)),
    ("adamw", dict(learning_rate=0.01, weight_decay=0.1, mask=_mask, nesterov=True)),
    ("adamw", dict(learning_rate=SCHEDULE, weight_decay=WD_SCHEDULE)),
    ("nadam", dict(learning_rate=0.01)),
    ("nadam", dict(learning_rate=0.01, b1=0.95, eps_root=1e-8)),
    ("nadamw", dict(learning_rate=0.01, weight_decay=0.05)),
    ("amsgrad", dict(learning_rate=0.01)),
    ("amsgrad", dict(learning_rate=0.01, bias_correction_mu=False)),
    ("amsgrad", dict(learning_rate=0.01, bias_correction_nu=False, eps_root=1e-8)),
    ("adamax", dict(learning_rate=0.01)),
    ("adamax", dict(learning_rate=SCHEDULE, b1=0.5, b2=0.99, eps=1e-4)),
    ("adamaxw", dict(learning_rate=0.01, weight_decay=0.1)),
    (
        "adamaxw",
        dict(
            learning_rate=0.01, weight_decay=WD_SCHEDULE, mask={"w": True, "b": False, "emb": True}
        ),
    ),
    ("radam", dict(learning_rate=0.01)),
    ("radam", dict(learning_rate=0.01, threshold=100.0, nesterov=True)),  # switches near step 60
    ("radam", dict(learning_rate=0.01, b2=0.99, eps=1e-4, eps_root=1e-8, threshold=4.0)),
    ("adopt", dict(learning_rate=0.01)),
    ("adopt", dict(learning_rate=SCHEDULE, b2=0.99, nesterov=True, eps=1e-4)),
    ("adan", dict(learning_rate=0.01)),
    ("adan", dict(learning_rate=SCHEDULE, b1=0.9, b3=0.999, weight_decay=0.05, mask=_mask)),
    ("ademamix", dict(learning_rate=0.01)),
    ("ademamix", dict(learning_rate=0.01, b3=B3_SCHEDULE, alpha=ALPHA_SCHEDULE, eps_root=1e-8)),
    ("laprop", dict(learning_rate=0.01)),
    ("laprop", dict(learning_rate=SCHEDULE, b1=0.5, b2=0.99, eps=1e-3)),
    ("lamb", dict(learning_rate=0.01)),
    ("lamb", dict(learning_rate=SCHEDULE, b1=0.5, eps_root=1e-8, weight_decay=0.1, mask=_mask)),
    ("adadelta", dict(learning_rate=1.0)),
    # (adadelta's coupled L2 term: tests/test_reference.py, whose reference follows the parameters)
    ("adadelta", dict(learning_rate=SCHEDULE, rho=0.5, eps=1e-3)),
    ("lion", dict(learning_rate=0.001)),
    ("lion", dict(learning_rate=SCHEDULE, b1=0.5, b2=0.9, weight_decay=WD_SCHEDULE, mask=_mask)),
    ("adabelief", dict(learning_rate=0.01)),
    # (with a schedule, adabelief's trajectories pass within 1e-3 of 0, where max_rel_diff's floor
    # reads its 1-ulp absolute differences from optax, 5e-8, as 4e-5)
    ("adabelief", dict(learning_rate=0.01, b2=0.99, eps=1e-8, eps_root=1e-10, nesterov=True)),
    ("yogi", dict(learning_rate=0.01)),
    ("yogi", dict(learning_rate=SCHEDULE, b1=0.5, b2=0.9, eps=1e-5)),
    ("rprop", dict(learning_rate=0.01)),
    (
        "rprop",
        dict(learning_rate=0.1, eta_minus=0.3, eta_plus=1.5, min_step_size=0.01, max_step_size=0.2),
    ),
    ("sm3", dict(learning_rate=0.01)),
    ("novograd", dict(learning_rate=0.01)),
    ("schedule_free_adamw", dict(learning_rate=0.01)),
    (
        "schedule_free_adamw",
        dict(learning_rate=0.01, warmup_steps=10, b1=0.95, weight_decay=0.05),
    ),
]


def _optax_rprop(
    learning_rate, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-6, max_step_size=50.0
):
    """optax.rprop with the current step: optax 0.2.8 returns the step of the previous update (its
    first update is 0; optax pull request 1725), but its new state's ``prev_updates`` is the
    current step (the paper's, torch's), which this twin returns: optax does all the arithmetic."""
    inner = optax.scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _, state = inner.update(updates, state, params)
        return jax.tree.map(jnp.negative, state.prev_updates), state

    return optax.GradientTransformationExtraArgs(inner.init, update)


def laprop(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mu_dtype=None,
) -> optax.GradientTransformation:
    """LaProp from optax's primitives (optax ships no LaProp): RMS-normalize, then average."""
    return optax.chain(
        optax.scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),
        optax.ema(b1, debias=True, accumulator_dtype=mu_dtype),
        optax.scale_by_learning_rate(learning_rate),
    )


# Methods optax does not ship: their twin is composed from optax primitives here.
COMPOSED_TWINS = ("laprop",)


def twin(name: str):
    """The independent reference of an alias: optax's function of that name (or optax.contrib's),
    or, for a method optax does not ship, its composition from optax primitives here; where
    optax's has a defect the alias does not reproduce, optax's arithmetic with the defect
    removed (rprop: `_optax_rprop`)."""
    if name == "rprop":
        return _optax_rprop
    for namespace in (optax, optax.contrib):
        if hasattr(namespace, name):
            return getattr(namespace, name)
    return globals()[name]


# The floor of max_rel_diff in the 100-step parity with optax, where the default 1e-3 is below what
# float32 resolves: LAMB moves every coordinate of a leaf by ~lr * |leaf| per step, so coordinates
# pass near 0 carrying the rounding of their larger past (ours and optax's Adam step differ by an
# ulp, which the trust ratio spreads over the leaf): the worst absolute difference over the stream
# is 1.2e-7, half an ulp of the largest entry (2.37), i.e. 1.4e-5 relative to a 1e-3 floor.
# AdaBelief and LaProp (whose steps are normalized: every coordinate moves by ~lr whatever its
# gradient) carry coordinates through 0 too: their worst differences from optax over the stream,
# 1.1e-8 to 1.4e-8 absolute (under the test build's XLA flags, which round differently in the
# last bit), read as 1.1e-5 to 1.4e-5 against the 1e-3 floor; 1e-2 keeps the bound at 1e-7
# absolute near zero, the float32 resolution of the values around 1 they came from. Adan (whose
# step mixes three moments) likewise: 1.05e-5 against the 1e-3 floor under `make test`'s loop
# emitters (DEFAULT_CODEGEN below), an absolute 1e-8.
PARITY_FLOOR = {"lamb": 1e-2, "adabelief": 1e-2, "laprop": 1e-2, "adan": 1e-2}

# `make test` compiles with XLA CPU's loop emitters instead of its newer fusion emitters
# (TEST_XLA_FLAGS: a third less CPU time for the suite). They can round one elementwise expression
# differently in two fusions of different shapes (the dense and the row path of one rule differ
# in the last bit). The tests that compare such programs bit for bit, or read the compiled HLO,
# compile with XLA's default emitters: ``jax.jit(..., compiler_options=DEFAULT_CODEGEN)``.
DEFAULT_CODEGEN = {"xla_cpu_use_fusion_emitters": True}

# Aliases that refuse row-sparse leaves (a norm over a whole leaf, or SM3's maxima over the other
# axes, has no meaning on a few rows of it), with the start of their TypeError (a regex naming the
# transformation and the leaf); the row-sparse grids expect that error.
REFUSES_ROWS = {
    "lamb": r"scale_by_trust_ratio: gradient leaf \['emb'\] is row-sparse",
    "novograd": r"scale_by_novograd: gradient leaf \['emb'\] is row-sparse",
    "sm3": r"ScaleBySm3: row-sparse leaf \['emb'\] cannot update .* \(SM3's cover set\)",
}

# One row per alias, with default settings: for the properties every method must have.
DEFAULTS = [row for i, row in enumerate(ALIASES) if row[0] not in [r[0] for r in ALIASES[:i]]]


# Storage options this library adds to optax's signatures: keyword-only, after optax's arguments.
STORAGE_OPTIONS = ("mu_dtype", "nu_dtype")


def storage_options(name: str) -> set:
    """The storage options (of STORAGE_OPTIONS) that the alias `name` takes."""
    return set(STORAGE_OPTIONS) & set(inspect.signature(getattr(atx, name)).parameters)


def case_id(row) -> str:
    name, kwargs = row
    settings = ",".join(
        f"{k}={getattr(v, '__name__', 'fn') if callable(v) else v}"
        for k, v in kwargs.items()
        if k != "learning_rate"
    )
    return f"{name}({settings})"


def make_params(seed: int = 0, dtype=np.float32) -> dict:
    """A small multi-leaf model: a matrix, a bias and an embedding table."""
    rng = np.random.default_rng(seed)
    return {
        "w": rng.normal(size=(6, 4)).astype(dtype),
        "b": rng.normal(size=(4,)).astype(dtype),
        "emb": rng.normal(size=(10, 3)).astype(dtype),
    }


def gradient_stream(steps: int = 100, seed: int = 1, dtype=np.float32) -> list[dict]:
    """Gradients with exact zeros and a x100 scale change half way.

    - ``emb``: only rows 0-2 are touched often (p=0.7); rows 3-8 rarely (p=0.05); row 9 never
      (its accumulators stay at their initial value: Adagrad's where-branch with a zero start).
    - ``b``: exactly zero on every third step.
    - everything is multiplied by 100 from step steps // 2 on.
    """
    rng = np.random.default_rng(seed)
    shapes = {k: v.shape for k, v in make_params().items()}
    row_rate = np.array([0.7] * 3 + [0.05] * 6 + [0.0])
    stream = []
    for t in range(steps):
        scale = 100.0 if t >= steps // 2 else 1.0
        g = {k: scale * rng.normal(size=s) for k, s in shapes.items()}
        g["emb"] *= (rng.random(10) < row_rate)[:, None]
        if t % 3 == 0:
            g["b"] = np.zeros_like(g["b"])
        stream.append({k: v.astype(dtype) for k, v in g.items()})
    return stream


class Stepper:
    """One jitted step (update, then apply) of `tx`, reusable across runs: tests that run the same
    transformation on several streams of the same shapes compile it once. `traces` counts the
    traces of the step over all its runs (1 unless it recompiled)."""

    def __init__(self, tx):
        self.tx, self.traces = tx, 0
        self.step = jax.jit(self._step)

    def _step(self, params, state, g):
        self.traces += 1
        updates, state = self.tx.update(g, state, params)
        return optax.apply_updates(params, updates), state


_ROW_STEPPERS = {}


def row_stepper(row, wrap=None, make=Stepper):
    """`make` (a Stepper by default) of a table row's alias, optionally wrapped (e.g. in a guard):
    one per row, wrap and `make` in the test process, so that the tests that run a row on the
    table's shapes share its compilation."""
    key = (id(row), wrap, make)
    if key not in _ROW_STEPPERS:
        name, kwargs = row
        alias = getattr(atx, name)(**kwargs)
        _ROW_STEPPERS[key] = make(wrap(alias) if wrap else alias)
    return _ROW_STEPPERS[key]


def run(tx, params, grads):
    """Runs `tx` (a transformation or a `Stepper`) over `grads` with one jitted step (update +
    apply).

    Returns every iterate of the parameters, the final state and how many times the step was traced
    (1 unless it recompiled; for a Stepper, over all its runs).
    """
    stepper = tx if isinstance(tx, Stepper) else Stepper(tx)
    state, iterates = stepper.tx.init(params), []
    for g in grads:
        params, state = stepper.step(params, state, g)
        iterates.append(params)
    return iterates, state, stepper.traces


def trajectories(txs, params, grads) -> list:
    """Every iterate of each transformation of `txs` over `grads`, all in one jitted program.

    One compilation for many settings (a ``lax.scan`` over the steps per transformation), for grids
    where compiling one step per setting would cost more than running it. Returns, per
    transformation, a tree of the parameters with a leading step axis.
    """
    stream = jax.tree.map(lambda *gs: np.stack(gs), *grads)

    def one(tx):
        def step(carry, g):
            params, state = carry
            updates, state = tx.update(g, state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        return jax.lax.scan(step, (params, tx.init(params)), stream)[1]

    return jax.jit(lambda: [one(tx) for tx in txs])()


def max_rel_diff(actual, expected, floor: float = 1e-3) -> float:
    """max |a - e| / max(|e|, floor) over all leaves: relative, with a floor for values near zero.

    Complex leaves are compared as complex numbers (|a - e| the modulus). Equal values
    (infinities, NaN against NaN) differ by 0; a NaN against a number is infinitely far (the max
    of an array with a NaN is NaN, which Python's max would skip)."""
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        complex_ = np.iscomplexobj(a) or np.iscomplexobj(e)
        dtype = np.complex128 if complex_ else np.float64
        a, e = np.asarray(a, dtype), np.asarray(e, dtype)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - e) / np.maximum(np.abs(e), floor)
        diff = np.where((a == e) | (np.isnan(a) & np.isnan(e)), 0.0, diff)
        worst = max(worst, float(np.max(np.nan_to_num(diff, nan=np.inf), initial=0.0)))
    return worst


# adafactor (optax's twin has the same signature); not in ALIASES, whose 100-step parity and
# row-sparse grids it does not take part in (factored statistics refuse rows).
# min_dim_size_to_factor is small so that the (6, 4) matrix is factored, the vectors kept whole.
FACTORED = [
    ("adafactor", dict(learning_rate=0.01, min_dim_size_to_factor=4)),
    (
        "adafactor",
        dict(
            learning_rate=SCHEDULE,
            min_dim_size_to_factor=4,
            momentum=0.9,
            weight_decay_rate=0.01,
            multiply_by_parameter_scale=False,
        ),
    ),
]

# Learning rates at which every alias converges on the parabola and Rosenbrock problems of
# optax's alias_test (test_optimization), the rest of each DEFAULTS row unchanged.
CONVERGENCE_LR = {
    "adagrad": 1.0,
    "rmsprop": 5e-3,
    "adam": 1e-1,
    "adamw": 1e-1,
    "nadam": 1e-2,
    "nadamw": 1e-2,
    "amsgrad": 1e-1,
    "adamax": 1e-1,
    "adamaxw": 1e-1,
    "radam": 5e-3,
    "adafactor": 1e-2,
    "adopt": 1e-1,
    "adan": 1e-1,
    "ademamix": 1e-2,
    "laprop": 1e-1,
    "lamb": 1e-3,
    "adadelta": 0.1,
    "lion": 1e-2,
    "adabelief": 1e-2,
    "yogi": 1e-1,
    "rprop": 1e-1,
    "sm3": 3e-1,
    "novograd": 1e-2,
    "schedule_free_adamw": 1e-1,
}
