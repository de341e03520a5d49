"""ADOPT against AdamW where Adam's second moment lets a rare large gradient fool it.

The stochastic convex problem of Reddi, Kale & Kumar (2018), the one ADOPT's paper starts from:
minimise :math:`\\mathbb{E} f_t(x)` over :math:`x \\in [-1, 1]` with

    f_t(x) = P x        with probability 1/P,
    f_t(x) = -x         otherwise,

so the expected gradient is 1/P > 0 and the minimum is x = -1. Most steps push x up; a rare
gradient P pushes it down, and should win on average. Adam divides that rare gradient by a second
moment that already contains it (v_t includes g_t^2), which caps its step near the others' size:
with a short memory (small beta2) the many small steps win and Adam settles at the maximum, x = +1.
ADOPT normalizes g_t by v_{t-1}, which does not contain it, so the rare gradient keeps its weight
and x reaches -1 for every beta2.

Writes ``newer_methods.png`` (left: x_t at beta2 = 0.9; right: the final x against beta2, mean and
range over the seeds) to the folder given::

    python examples/newer_methods.py out/            # 20000 steps, 4 seeds, ~10 s on a CPU
    python examples/newer_methods.py out/ --steps 2000 --seeds 1
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adaptive_tx as atx

P = 11.0  # the rare gradient's size and 1 / its probability
LEARNING_RATE = 1e-2
BETA2S = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
SHOWN_BETA2 = 0.9
METHODS = {
    "AdamW": lambda b2: atx.adamw(LEARNING_RATE, b2=b2, weight_decay=0.0),
    "ADOPT": lambda b2: atx.adopt(LEARNING_RATE, b2=b2),
}


def trajectories(tx: optax.GradientTransformation, steps: int, seeds: int) -> np.ndarray:
    """x_t for t = 1..steps from x_0 = 0, projected back onto [-1, 1] after every step, for each
    seed: an array (seeds, steps), all seeds in one compiled program."""

    def step(carry, key):
        x, state = carry
        rare = jax.random.uniform(key) < 1.0 / P
        g = jnp.where(rare, P, -1.0) * jnp.ones(1)
        updates, state = tx.update(g, state, x)
        x = jnp.clip(optax.apply_updates(x, updates), -1.0, 1.0)
        return (x, state), x[0]

    def run(seed):
        x0 = jnp.zeros(1)
        keys = jax.random.split(jax.random.key(seed), steps)
        return jax.lax.scan(step, (x0, tx.init(x0)), keys)[1]

    return np.asarray(jax.jit(jax.vmap(run))(jnp.arange(seeds)))


def _final(xs: np.ndarray) -> np.ndarray:
    """Where each seed ends: x averaged over the last tenth of the steps (one iterate is noisy)."""
    return xs[:, -max(1, xs.shape[1] // 10) :].mean(axis=1)


def _plot(results: dict, steps: int, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"AdamW": "tab:red", "ADOPT": "tab:blue"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    t = np.arange(1, steps + 1)
    for name, by_beta2 in results.items():
        xs = by_beta2[SHOWN_BETA2]
        left.plot(t, xs.mean(axis=0), color=colors[name], label=name, lw=1.5)
        left.fill_between(t, xs.min(axis=0), xs.max(axis=0), color=colors[name], alpha=0.15)
    left.axhline(-1.0, color="black", ls=":", lw=1)
    left.text(steps * 0.02, -0.97, "optimum x = -1", va="bottom", fontsize=9,
              bbox=dict(facecolor="white", edgecolor="none", alpha=0.8))
    left.set(
        xlabel="step",
        ylabel="x",
        ylim=(-1.08, 1.08),
        title=f"x over the steps, $\\beta_2$ = {SHOWN_BETA2} (lr {LEARNING_RATE})",
    )
    left.legend(loc="center right")
    for name, by_beta2 in results.items():
        beta2s = sorted(by_beta2)
        finals = np.array([_final(by_beta2[b]) for b in beta2s])  # (beta2, seed)
        mean = finals.mean(axis=1)
        right.errorbar(
            np.arange(len(beta2s)),
            finals.mean(axis=1),
            yerr=[mean - finals.min(axis=1), finals.max(axis=1) - mean],
            color=colors[name],
            marker="o",
            capsize=3,
            label=name,
        )
    right.axhline(-1.0, color="black", ls=":", lw=1)
    right.set_xticks(np.arange(len(beta2s)), [str(b) for b in beta2s])
    right.set(
        xlabel="$\\beta_2$",
        ylabel=f"x, mean over the last {steps // 10} steps",
        ylim=(-1.08, 1.08),
        title="where each ends, by $\\beta_2$ (mean, range over seeds)",
    )
    right.legend(loc="center right")
    fig.suptitle(
        f"f(x) = {P:g}x with probability 1/{P:g}, else -x, on [-1, 1]: "
        "AdamW's step caps the rare gradient, ADOPT's does not",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path, help="folder for the figure")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument(
        "--beta2s", type=lambda v: tuple(float(b) for b in v.split(",")), default=BETA2S,
        help=f"comma-separated, must include {SHOWN_BETA2} (default: {','.join(map(str, BETA2S))})",
    )
    args = parser.parse_args(argv)
    if SHOWN_BETA2 not in args.beta2s:
        parser.error(f"--beta2s must include {SHOWN_BETA2}, the one the left panel shows")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        name: {
            b2: trajectories(make(b2), args.steps, args.seeds)
            for b2 in args.beta2s
        }
        for name, make in METHODS.items()
    }
    print(
        f"x over the last {args.steps // 10} of {args.steps} steps (mean over {args.seeds} seeds; "
        "the optimum is -1)"
    )
    print("beta2   " + "".join(f"{name:>9}" for name in results))
    for b2 in args.beta2s:
        print(f"{b2:<8}" + "".join(f"{_final(r[b2]).mean():9.2f}" for r in results.values()))
    path = args.out / "newer_methods.png"
    _plot(results, args.steps, path)
    print(f"wrote {path}")
    return {"results": results, "files": [path.name]}


if __name__ == "__main__":
    main()
