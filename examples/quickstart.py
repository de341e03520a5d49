"""Quickstart: compare adaptive_tx optimizers on a small classification task.

Trains the same small ``flax.nnx`` MLP (same initial weights, same minibatches)
on scikit-learn's bundled 8x8 digits data set (no download needed) with each of
the adaptive_tx aliases -- adagrad, rmsprop, adam, adamw, nadam, amsgrad, adamax,
radam -- and plain ``optax.sgd`` as a baseline, then prints a table of final
train loss, test accuracy and median wall time per step.

Each adaptive_tx alias is an ``optax.GradientTransformation`` with optax's own
signature, so it plugs straight into ``nnx.Optimizer``.

Run it with ``make demo`` or::

    python examples/quickstart.py                       # all optimizers, 300 steps
    python examples/quickstart.py --steps 20 --optimizers adam,sgd
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import adaptive_tx as atx

# name -> factory returning a GradientTransformation; learning rates tuned for this task.
OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1),  # plain SGD baseline (no momentum)
    "adagrad": lambda: atx.adagrad(0.1),
    "rmsprop": lambda: atx.rmsprop(3e-3),
    "adam": lambda: atx.adam(3e-3),
    "adamw": lambda: atx.adamw(3e-3, weight_decay=1e-2),
    "nadam": lambda: atx.nadam(3e-3),
    "amsgrad": lambda: atx.amsgrad(3e-3),
    "adamax": lambda: atx.adamax(1e-2),  # infinity-norm scaling takes smaller steps
    "radam": lambda: atx.radam(1e-2),  # rectification damps the early steps
}


class MLP(nnx.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def load_data(seed: int):
    """Digits, split 75/25 (stratified), features standardised with train statistics."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    prep = lambda a: jnp.asarray((a - mean) / std, jnp.float32)
    return prep(x_tr), jnp.asarray(y_tr), prep(x_te), jnp.asarray(y_te)


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def evaluate(model, x, y):
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (logits.argmax(-1) == y).mean()


def train(name, data, batches, seed):
    """Trains a freshly initialised model with optimizer `name`; returns a result row."""
    x_tr, y_tr, x_te, y_te = data
    model = MLP(x_tr.shape[1], 64, 10, rngs=nnx.Rngs(seed))  # same init for every optimizer
    optimizer = nnx.Optimizer(model, OPTIMIZERS[name](), wrt=nnx.Param)
    step_ms = []
    for idx in batches:
        xb, yb = x_tr[idx], y_tr[idx]
        start = time.perf_counter()
        jax.block_until_ready(train_step(model, optimizer, xb, yb))
        step_ms.append(1e3 * (time.perf_counter() - start))
    train_loss, _ = evaluate(model, x_tr, y_tr)
    _, test_acc = evaluate(model, x_te, y_te)
    # Step 0 includes compilation, so it is never timed.
    ms_per_step = float(np.median(step_ms[1:])) if len(step_ms) > 1 else float("nan")
    return {
        "optimizer": name,
        "train_loss": float(train_loss),
        "test_accuracy": float(test_acc),
        "ms_per_step": ms_per_step,
    }


def format_table(results):
    header = f"{'optimizer':<10} {'train loss':>10} {'test acc':>9} {'ms/step':>8}"
    rows = [
        f"{r['optimizer']:<10} {r['train_loss']:>10.4f} "
        f"{r['test_accuracy']:>9.3f} {r['ms_per_step']:>8.3f}"
        for r in results
    ]
    return "\n".join([header, "-" * len(header), *rows])


def choose(parser, value, known, what):
    """The names in a comma-separated `value`, each one of `known` (else a parser error)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown {what}(s): {', '.join(unknown)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="training steps per optimizer")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="data split, init and batch seed")
    p.add_argument(
        "--optimizers",
        default=",".join(OPTIMIZERS),
        help=f"comma-separated subset of: {','.join(OPTIMIZERS)}",
    )
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be positive")
    args.optimizers = choose(p, args.optimizers, OPTIMIZERS, "optimizer")
    return args


def main(argv=None):
    args = parse_args(argv)
    data = load_data(args.seed)
    n_train = data[0].shape[0]
    rng = np.random.default_rng(args.seed)  # identical minibatch sequence for every optimizer
    batches = [rng.choice(n_train, args.batch_size, replace=False) for _ in range(args.steps)]
    results = [train(name, data, batches, args.seed) for name in args.optimizers]
    results.sort(key=lambda r: r["test_accuracy"], reverse=True)
    print(
        f"digits: {n_train} train / {data[2].shape[0]} test, {args.steps} steps, "
        f"batch size {args.batch_size}, seed {args.seed}\n"
    )
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
