"""Low-precision Adam state on a real task: does it train as well as float32?

Trains the same ``flax.nnx`` MLP (digits, scikit-learn's bundled 8x8 images; same initial weights
and minibatches per seed) with Adam whose state is kept in

* float32 (the reference),
* bfloat16 with stochastic rounding (``"bfloat16_sr"``),
* 8-bit blockwise quantization (``"int8_blockwise"``, Dettmers et al. 2022; stochastic rounding),
* the same with nearest rounding (bitsandbytes' choice),
* bfloat16 rounded to nearest,

with float32 parameters, and then the all-bfloat16 setting usually warned against -- parameters and
state in bfloat16 with a small learning rate -- once with round-to-nearest (a step smaller than half
a bfloat16 unit of the parameter vanishes, so training stalls) and once with stochastic rounding of
the state and of the parameter update (small steps survive on average). Prints, per setting, the
final training loss of each seed and its mean relative to float32, the share of non-zero parameter
updates that left the parameter unchanged (lost to rounding) over the last 100 steps, and the
state's bytes.

Run it with::

    python examples/low_precision.py                   # 3 seeds, 1500 steps
    python examples/low_precision.py --steps 50 --seeds 0 --out figures/   # and a loss plot
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quickstart import MLP, choose, load_data, loss_fn

import adaptive_tx as atx
from adaptive_tx.state_precision import round_stochastic_bfloat16


class Setting(NamedTuple):
    """How the parameters and Adam's moments are kept."""

    label: str
    param_dtype: Any
    state: Any  # mu_dtype = nu_dtype, or a (mu_dtype, nu_dtype) pair
    stochastic_update: bool = False  # round the parameter update stochastically (bf16 params)
    eps: float = 1e-8
    library: str = "adaptive_tx"  # or "optax": moments kept and computed in the params' dtype

    def optimizer(self, learning_rate):
        if self.library == "optax":
            return optax.adam(learning_rate, eps=self.eps)
        mu, nu = self.state if type(self.state) is tuple else (self.state, self.state)
        return atx.adam(learning_rate, eps=self.eps, mu_dtype=mu, nu_dtype=nu)


SETTINGS = {
    "fp32": Setting("float32 (reference)", jnp.float32, None),
    "bf16_sr": Setting("bf16 state, stochastic rounding", jnp.float32, "bfloat16_sr"),
    "int8": Setting("8-bit state, stochastic rounding", jnp.float32, "int8_blockwise"),
    "int8_nearest": Setting(
        "8-bit state, nearest", jnp.float32, atx.Int8Blockwise(stochastic=False)
    ),
    "fp8": Setting("FP8 e4m3fn state, stochastic", jnp.float32, "float8_e4m3fn_blockwise"),
    "fp8_e5m2_nu": Setting(
        "FP8 state (nu e5m2), stochastic",
        jnp.float32,
        ("float8_e4m3fn_blockwise", "float8_e5m2_blockwise"),
    ),
    "bf16": Setting("bf16 state, round to nearest", jnp.float32, jnp.bfloat16),
    "all_bf16": Setting("bf16 params + state, nearest", jnp.bfloat16, jnp.bfloat16),
    "all_bf16_sr": Setting("bf16 params + state, stochastic", jnp.bfloat16, "bfloat16_sr", True),
}


def apply_updates(params, updates, key, stochastic):
    """params + updates, rounded to the parameters' dtype (stochastically if asked)."""
    leaves, treedef = jax.tree.flatten(params)
    new = []
    for i, (p, u) in enumerate(zip(leaves, treedef.flatten_up_to(updates))):
        total = p.astype(jnp.float32) + u.astype(jnp.float32)
        if stochastic and p.dtype == jnp.bfloat16:
            new.append(round_stochastic_bfloat16(total, jax.random.fold_in(key, i)))
        else:
            new.append(total.astype(p.dtype))
    return treedef.unflatten(new)


def _lost(params, new, updates):
    """The share of coordinates whose non-zero update left the stored parameter unchanged."""
    lost = moved = 0
    for p, q, u in zip(*(jax.tree.leaves(t) for t in (params, new, updates))):
        lost += jnp.sum((p == q) & (u != 0))
        moved += jnp.sum(u != 0)
    return lost / jnp.maximum(moved, 1)


def train(setting, data, batches, seed, learning_rate, hidden):
    """Returns (loss after every step, final full-train-set loss, share of updates lost over the
    last 100 steps, state bytes)."""
    x_tr, y_tr = data[0], data[1]
    model = MLP(x_tr.shape[1], hidden, 10, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(lambda p: p.astype(setting.param_dtype), params)
    tx = setting.optimizer(learning_rate)
    state = tx.init(params)

    def loss_of(params, x, y):
        wide = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        return loss_fn(nnx.merge(graphdef, wide), x, y)

    @jax.jit
    def step(params, state, x, y, key):
        loss, grads = jax.value_and_grad(loss_of)(params, x, y)
        updates, state = tx.update(grads, state, params)
        new = apply_updates(params, updates, key, setting.stochastic_update)
        return new, state, loss, _lost(params, new, updates)

    losses, lost = [], []
    key = jax.random.key(seed)
    for t, idx in enumerate(batches):
        x, y, k = x_tr[idx], y_tr[idx], jax.random.fold_in(key, t)
        params, state, loss, lost_t = step(params, state, x, y, k)
        losses.append(float(loss))
        lost.append(float(lost_t))
    final = float(jax.jit(loss_of)(params, x_tr, y_tr))
    return losses, final, float(np.mean(lost[-100:])), atx.state_nbytes(state)


def run(settings, seeds, steps, batch_size, learning_rate, hidden):
    """{setting: {"final", "curves", "lost": [per seed], "bytes": int}}."""
    results = {name: {"final": [], "curves": [], "lost": []} for name in settings}
    for seed in seeds:
        data = load_data(seed)
        rng = np.random.default_rng(seed)
        batches = [rng.choice(data[0].shape[0], batch_size, replace=False) for _ in range(steps)]
        for name in settings:
            curve, final, lost, nbytes = train(
                SETTINGS[name], data, batches, seed, learning_rate, hidden
            )
            results[name]["final"].append(final)
            results[name]["lost"].append(lost)
            results[name]["curves"].append(curve)
            results[name]["bytes"] = nbytes
    return results


EPS = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)


def eps_study(
    seeds, steps, batch_size, learning_rate, hidden, dtypes=("float16", "bfloat16"), eps_values=EPS
):
    """Adam with parameters, gradients and moments in `dtype`, for each ε: optax (arithmetic in
    that dtype) and adaptive_tx (arithmetic in float32, moments stored in that dtype).

    Returns {(dtype, library): {eps: (mean final loss, first step with a non-finite loss or None)}}.
    """
    table = {}
    for dtype in dtypes:
        for library in ("optax", "adaptive_tx"):
            row = table.setdefault((dtype, library), {})
            for eps in eps_values:
                name = f"{dtype}-{library}-{eps}"
                SETTINGS[name] = Setting(name, jnp.dtype(dtype), None, eps=eps, library=library)
                result = run([name], seeds, steps, batch_size, learning_rate, hidden)[name]
                del SETTINGS[name]
                bad = [
                    int(np.argmin(np.isfinite(c)))
                    for c in result["curves"]
                    if not np.all(np.isfinite(c))
                ]
                row[eps] = (float(np.mean(result["final"])), min(bad) + 1 if bad else None)
    return table


def format_eps_table(table):
    eps_values = next(iter(table.values())).keys()
    header = f"{'params, grads, moments':<24} {'library':<12} " + " ".join(
        f"{e:>9.0e}" for e in eps_values
    )
    rows = []
    for (dtype, library), row in table.items():
        cells = [
            f"{'NaN@' + str(nan):>9}" if nan else f"{loss:>9.4f}" for loss, nan in row.values()
        ]
        rows.append(f"{dtype:<24} {library:<12} " + " ".join(cells))
    return "\n".join([header, "-" * len(header), *rows])


def format_table(results, seeds):
    reference = np.mean(results["fp32"]["final"]) if "fp32" in results else float("nan")
    header = (
        f"{'setting':<34} "
        + " ".join(f"{'seed ' + str(s):>9}" for s in seeds)
        + f" {'mean':>9} {'vs fp32':>8} {'lost':>6} {'state bytes':>12}"
    )
    rows = []
    for name, r in results.items():
        mean = float(np.mean(r["final"]))
        rows.append(
            f"{SETTINGS[name].label:<34} "
            + " ".join(f"{v:>9.4f}" for v in r["final"])
            + f" {mean:>9.4f} {100 * (mean / reference - 1):>+7.1f}%"
            + f" {100 * np.mean(r['lost']):>5.0f}% {r['bytes']:>12,}"
        )
    return "\n".join([header, "-" * len(header), *rows])


def plot(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        curve = np.mean(np.asarray(r["curves"]), axis=0)
        smooth = np.convolve(curve, np.ones(25) / 25, mode="valid") if curve.size > 25 else curve
        ax.plot(smooth, label=SETTINGS[name].label)
    ax.set(xlabel="step", ylabel="minibatch loss (mean over seeds)", yscale="log")
    ax.legend(fontsize=8)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "low_precision_loss.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--hidden", type=int, default=256, help="hidden units (64 x hidden kernel)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=",".join(SETTINGS))
    p.add_argument("--out", default=None, help="folder for the loss plot (needs matplotlib)")
    p.add_argument(
        "--study",
        choices=("storage", "eps"),
        default="storage",
        help="storage: the settings above; eps: final loss per eps in float16 / bfloat16",
    )
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.settings = choose(p, args.settings, SETTINGS, "setting")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.study == "eps":
        table = eps_study(args.seeds, args.steps, args.batch_size, args.learning_rate, args.hidden)
        print(
            f"digits MLP 64-{args.hidden}-10, Adam lr {args.learning_rate}, {args.steps} steps: "
            "final training loss (mean over seeds) per eps, or the first step whose loss is NaN\n"
        )
        print(format_eps_table(table))
        return table
    results = run(
        args.settings, args.seeds, args.steps, args.batch_size, args.learning_rate, args.hidden
    )
    print(
        f"digits MLP 64-{args.hidden}-10, Adam lr {args.learning_rate}, {args.steps} steps of "
        f"{args.batch_size}; final training loss (full training set)\n"
    )
    print(format_table(results, args.seeds))
    if args.out:
        print(f"\nplot: {plot(results, args.out)}")
    return results


if __name__ == "__main__":
    main()
