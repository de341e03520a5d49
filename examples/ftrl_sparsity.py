r"""FTRL-Proximal with L1 on sparse features: rare-feature weights stay exactly zero until the
evidence for them is strong.

A synthetic click-through problem: each impression activates ``--active`` of ``--features`` hashed
binary features (plus a bias feature), drawn with Zipf-like frequencies, so most features are rare.
Only one feature in ten carries signal (true weight ~ N(0, 1)); the click is Bernoulli of the
logistic of the sum of the active true weights. A logistic regression is trained online, one
minibatch per step, from zero weights, by:

- FTRL-Proximal with L1 (``atx.ftrl(l1_regularization_strength=...)``): a weight is the closed form
  :math:`-(z - \mathrm{clip}(z, \pm\lambda_1)) / q`, exactly 0 while the feature's accumulated
  evidence :math:`|z| \le \lambda_1`;
- Adagrad (``atx.adagrad``), which is FTRL-Proximal without regularization from zero weights
  (McMahan 2011): any feature seen once gets a non-zero weight.

Writes ``ftrl_sparsity.png`` to the folder given on the command line (default ``out/ftrl``):
the fraction of weights that are exactly zero over training, the same fraction by how often a
feature was seen, and the held-out log-loss; and prints the final numbers.

Run: ``python examples/ftrl_sparsity.py [out_dir] [--steps 3000] [--tiny]``.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optax

import adaptive_tx as atx

COLORS = {"FTRL + L1": "tab:red", "Adagrad": "tab:blue"}
STYLES = {"FTRL + L1": "-", "Adagrad": "--"}


def optimizers(l1: float) -> dict[str, optax.GradientTransformation]:
    return {
        "FTRL + L1": atx.ftrl(0.1, l1_regularization_strength=l1),
        "Adagrad": atx.adagrad(0.1),
    }


def make_data(num_batches: int, batch: int, features: int, active: int, seed: int):
    """Active feature ids (num_batches, batch, active + 1; id 0 is the bias), clicks, and the
    true weights (one feature in ten informative)."""
    rng = np.random.default_rng(seed)
    frequency = 1.0 / np.arange(1, features) ** 1.1  # Zipf-like: a few common, most rare
    frequency /= frequency.sum()
    ids = 1 + rng.choice(features - 1, size=(num_batches, batch, active), p=frequency)
    ids = np.concatenate([np.zeros((num_batches, batch, 1), ids.dtype), ids], axis=-1)
    informative = rng.random(features) < 0.1
    truth = np.where(informative, rng.normal(size=features), 0.0)
    truth[0] = -1.5  # a click rate around 20%
    logits = truth[ids].sum(-1)
    clicks = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return ids.astype(np.int32), clicks, truth


def log_loss(w, ids, clicks):
    logits = w[ids].sum(-1)
    return optax.sigmoid_binary_cross_entropy(logits, clicks).mean()


def summed_loss(w, ids, clicks):
    """The minibatch's summed loss: each impression adds its own evidence, as in online FTRL."""
    return log_loss(w, ids, clicks) * clicks.size


def train(tx, ids, clicks, test, every: int, features: int):
    """Online training (one minibatch a step) in one jitted scan; returns, every `every` steps,
    the fraction of exactly-zero weights and the held-out log-loss, and the final weights."""

    def step(carry, batch):
        w, state = carry
        grads = jax.grad(summed_loss)(w, *batch)
        updates, state = tx.update(grads, state, w)
        w = optax.apply_updates(w, updates)
        return (w, state), (jnp.mean(w == 0), log_loss(w, *test))

    w0 = jnp.zeros(features, jnp.float32)
    scan = jax.jit(lambda: jax.lax.scan(step, (w0, tx.init(w0)), (ids, clicks)))
    (w, _), (zeros, losses) = scan()
    pick = slice(every - 1, None, every)
    return np.asarray(zeros)[pick], np.asarray(losses)[pick], np.asarray(w)


def zeros_by_count(w, counts, edges):
    """The fraction of exactly-zero weights among features seen [edges[i], edges[i+1]) times."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        chosen = (counts >= lo) & (counts < hi)
        out.append(float(np.mean(w[chosen] == 0)) if chosen.any() else np.nan)
    return np.array(out)


def plot(results, steps, edges, path):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for name, r in results.items():
        axes[0].plot(steps, 100 * r["zeros"], color=COLORS[name], label=name, lw=2, ls=STYLES[name])
        style = dict(color=COLORS[name], label=name, ls=STYLES[name])
        axes[1].plot(edges[:-1], 100 * r["zeros_by_count"], "o", **style)
        axes[2].plot(steps, r["loss"], lw=2, **style)
    axes[0].set(
        title="Weights that are exactly 0.0", xlabel="step", ylabel="% of all features",
        ylim=(-2, 102),
    )
    axes[1].set(
        title="...by how often the feature was seen",
        xlabel="times seen in training (bins from 1, 2, 4, ...)",
        ylabel="% of those features exactly 0", xscale="log", ylim=(-2, 102),
    )
    axes[2].set(title="Held-out log-loss", xlabel="step", ylabel="log-loss")
    axes[1].axhline(90, color="gray", ls=":", lw=1)
    axes[1].text(edges[0] * 1.1, 86, "90% of features carry no signal", color="gray", fontsize=8)
    axes[0].text(steps[-1], 4, "Adagrad's zeros: features never seen", ha="right", fontsize=8)
    for ax, where in zip(axes, ("center right", "center right", "upper right")):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=9, loc=where)
    fig.suptitle(
        "FTRL-Proximal with L1 keeps a rare feature's weight exactly 0 until its evidence |z| "
        "exceeds λ₁; Adagrad (FTRL without L1) gives every feature it has seen a weight",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="out/ftrl")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--features", type=int, default=20000)
    parser.add_argument("--active", type=int, default=10)
    parser.add_argument("--l1", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a fast run for the tests")
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps, args.features = 300, 2000
    sizes = (args.steps + 20, args.batch_size, args.features, args.active)
    ids, clicks, _ = make_data(*sizes, args.seed)
    test = (ids[args.steps :].reshape(-1, args.active + 1), clicks[args.steps :].reshape(-1))
    ids, clicks = ids[: args.steps], clicks[: args.steps]
    counts = np.bincount(ids.ravel(), minlength=args.features)
    edges = 2.0 ** np.arange(0, np.ceil(np.log2(counts.max() + 1)) + 1)
    every = max(1, args.steps // 100)
    steps = np.arange(every, args.steps + 1, every)
    results = {}
    for name, tx in optimizers(args.l1).items():
        zeros, loss, w = train(tx, ids, clicks, test, every, args.features)
        results[name] = dict(
            zeros=zeros, loss=loss, w=w, zeros_by_count=zeros_by_count(w, counts, edges)
        )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ftrl_sparsity.png")
    plot(results, steps, edges, path)
    print(f"{'optimizer':<10} {'exact zeros':>12} {'zeros among seen':>17} {'held-out loss':>14}")
    seen = counts > 0
    for name, r in results.items():
        print(
            f"{name:<10} {100 * r['zeros'][-1]:>11.1f}% {100 * np.mean(r['w'][seen] == 0):>16.1f}% "
            f"{r['loss'][-1]:>14.4f}"
        )
    print(f"wrote {path}")
    return dict(results=results, counts=counts, files=[path])


if __name__ == "__main__":
    main()
