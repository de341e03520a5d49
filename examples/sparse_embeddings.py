"""Rare tokens and row-sparse updates: a flax.nnx bag-of-words model on synthetic Zipf text.

Each document is 16 tokens of a Zipf-distributed vocabulary. The frequent tokens (the 100 most
common: "the", "of", ...) carry no signal; the label of a document is the polarity (+/-) of its one
content token, drawn from a Zipf law over the rest of the vocabulary, so most content tokens are
rare: the label signal sits in rows of the embedding table that a batch almost never touches.

The model (mean of the token embeddings, then a linear layer) is trained from the same
initialization on the same batches with

  sgd      one global learning rate (adaptive_tx.scale_by_learning_rate)
  adagrad  adaptive_tx.adagrad: a rare row keeps a large step
  adam     adaptive_tx.adam: lazy (torch SparseAdam) with row-sparse gradients

each twice: with dense gradients (nnx.value_and_grad: a V x D gradient, every row updated) and
with row-sparse ones (adaptive_tx.sparse.value_and_grad: only the looked-up rows, lazy updates).
SGD and Adagrad give the same model either way; Adam's dense semantics keep moving rows through
their momentum, its lazy ones do not. A third Adam run, "catch-up", takes row-sparse gradients
with adaptive_tx.sparse.catch_up(adaptive_tx.adam, ...): each looked-up row first gets the
zero-gradient steps it skipped, in closed form (read through the optimizer's view in the forward
pass, and every row flushed before each evaluation), which is dense Adam's model at the
row-sparse cost. The script prints the test accuracy on documents whose
content token was seen at most 3 times in training ("rare"), on the others, and the median time of
a training step, and draws the rare-token accuracy during training and the step times.

    python examples/sparse_embeddings.py out/            # vocabulary 200,000, 300 steps
    python examples/sparse_embeddings.py out/ --tiny     # seconds: what the tests run
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import adaptive_tx as atx

# Learning rates: the best rare-token accuracy of a {..., 0.1, 0.3, 1, 3, ...} grid at the defaults.
# Adagrad starts its accumulators at 0 (torch's default, Duchi et al.'s G_0): optax's 0.1 is far
# above these squared gradients (~1e-8) and turns Adagrad into SGD (rare accuracy 0.52 here).
OPTIMIZERS = {
    "sgd": lambda: atx.scale_by_learning_rate(3.0),
    "adagrad": lambda: atx.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-10),
    "adam": lambda: atx.adam(0.1),
}
MODES = ("dense", "row-sparse")
CATCH_UP = "catch-up"  # Adam only: row-sparse gradients, dense Adam's result
HEAD = 100  # the frequent, uninformative tokens
RARE = 3  # a content token seen at most this often in training is rare


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=pathlib.Path, help="folder for the figure")
    p.add_argument("--vocab", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--doc-len", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (the tests)")
    args = p.parse_args(argv)
    if args.tiny:
        args.vocab, args.dim, args.steps, args.batch_size, args.eval_every = 3000, 8, 30, 128, 10
    if min(args.vocab - HEAD, args.dim, args.steps, args.batch_size, args.doc_len) < 2:
        p.error("--vocab must exceed 101 and --dim, --steps, --batch-size, --doc-len be >= 2")
    return args


def zipf_probs(n: int, exponent: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return p / p.sum()


def make_docs(rng, num, args, polarity):
    """`num` documents (token ids) and labels: head fillers plus one content token."""
    fillers = rng.choice(HEAD, size=(num, args.doc_len - 1), p=zipf_probs(HEAD))
    content = HEAD + rng.choice(args.vocab - HEAD, size=num, p=zipf_probs(args.vocab - HEAD, 1.0))
    tokens = np.concatenate([fillers, content[:, None]], axis=1)
    tokens = rng.permuted(tokens, axis=1).astype(np.int32)
    return tokens, (polarity[content] > 0).astype(np.int32), content


class BagOfWords(nnx.Module):
    def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs):
        # sparse.Embed is nnx.Embed, plus row-sparse gradients under sparse.value_and_grad.
        init = nnx.initializers.normal(0.01)
        self.embed = atx.sparse.Embed(vocab, dim, embedding_init=init, rngs=rngs)
        self.out = nnx.Linear(dim, 2, rngs=rngs)

    def __call__(self, tokens):
        return self.out(self.embed(tokens).mean(axis=1))


def loss_fn(model, tokens, labels):
    return optax.softmax_cross_entropy_with_integer_labels(model(tokens), labels).mean()


def make_step(mode):
    grad_fn = nnx.value_and_grad if mode == "dense" else atx.sparse.value_and_grad

    @nnx.jit(donate_argnums=(0, 1))
    def step(model, optimizer, tokens, labels):
        if mode == CATCH_UP:
            # The forward pass reads the looked-up rows caught up, as dense Adam has them.
            view = optimizer.tx.view(nnx.as_pure(optimizer.opt_state))
            loss, grads = atx.sparse.value_and_grad(loss_fn, view=view)(model, tokens, labels)
        else:
            loss, grads = grad_fn(loss_fn)(model, tokens, labels)
        optimizer.update(model, grads)
        return loss

    return step


@nnx.jit
def flush(optimizer, model):
    atx.sparse.flush(optimizer, model)


@nnx.jit
def correct(model, tokens, labels):
    return model(tokens).argmax(-1) == labels


def train(name, mode, data, args):
    """One run: returns its accuracies over training and its median step time."""
    batches, (test_tokens, test_labels), rare = data
    model = BagOfWords(args.vocab, args.dim, rngs=nnx.Rngs(args.seed))
    tx = atx.sparse.catch_up(atx.adam, 0.1) if mode == CATCH_UP else OPTIMIZERS[name]()
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    step = make_step(mode)
    times, curve = [], []
    for t, (tokens, labels) in enumerate(batches, start=1):
        start = time.perf_counter()
        jax.block_until_ready(step(model, optimizer, tokens, labels))
        times.append(time.perf_counter() - start)
        if t % args.eval_every == 0 or t == len(batches):
            if mode == CATCH_UP:
                flush(optimizer, model)  # evaluation reads every row: bring them all up to date
            hits = np.asarray(correct(model, test_tokens, test_labels))
            curve.append((t, float(hits[rare].mean()), float(hits[~rare].mean())))
    return {
        "optimizer": name,
        "mode": mode,
        "rare_accuracy": curve[-1][1],
        "frequent_accuracy": curve[-1][2],
        "ms_per_step": 1e3 * float(np.median(times[1:])),  # step 1 compiles
        "curve": curve,
    }


def make_data(args):
    rng = np.random.default_rng(args.seed)
    polarity = rng.choice([-1, 1], size=args.vocab)
    polarity[:HEAD] = 0
    train_docs = [make_docs(rng, args.batch_size, args, polarity) for _ in range(args.steps)]
    seen = np.bincount(np.concatenate([c for _, _, c in train_docs]), minlength=args.vocab)
    test_tokens, test_labels, test_content = make_docs(rng, 20 * args.batch_size, args, polarity)
    keep = seen[test_content] > 0  # a token never seen in training cannot be learned
    rare = seen[test_content[keep]] <= RARE
    batches = [(jnp.asarray(t), jnp.asarray(y)) for t, y, _ in train_docs]
    test = (jnp.asarray(test_tokens[keep]), jnp.asarray(test_labels[keep]))
    return batches, test, rare


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sgd": "tab:gray", "adagrad": "tab:blue", "adam": "tab:orange"}
    styles = {"dense": ("-", "o"), "row-sparse": ("--", "x"), CATCH_UP: (":", "s")}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for r in results:
        steps, rare, _ = zip(*r["curve"])
        line, marker = styles[r["mode"]]
        lazy = r["optimizer"] == "adam" and r["mode"] == "row-sparse"  # SGD, Adagrad: no momentum
        label = f"{r['optimizer']} ({'lazy ' if lazy else ''}{r['mode']})"
        ax.plot(steps, rare, line, marker=marker, color=colors[r["optimizer"]], label=label)
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    ax.set(xlabel="training step", ylabel="test accuracy on rare-token documents", ylim=(0.4, 1.02))
    ax.set_title(f"documents whose content token was seen <= {RARE} times in training")
    ax.legend(loc="upper left", fontsize=8)
    ax.text(
        0.99,
        0.02,
        "SGD and Adagrad: dense and row-sparse runs coincide (the same updates)",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        color="dimgray",
    )
    names = list(dict.fromkeys(r["optimizer"] for r in results))
    width = 0.38
    for i, mode in enumerate(MODES):
        ms = [
            next(r["ms_per_step"] for r in results if r["optimizer"] == n and r["mode"] == mode)
            for n in names
        ]
        if mode == "row-sparse":  # Adam's catch-up step beside its lazy one
            catch_up = next(r["ms_per_step"] for r in results if r["mode"] == CATCH_UP)
            bar = bx.bar([names.index("adam") + width * 1.5], [catch_up], width * 0.9,
                         label="catch-up (adam)", color="#dd8844")
            bx.bar_label(bar, fmt="%.1f", fontsize=8)
        bars = bx.bar(
            np.arange(len(names)) + (i - 0.5) * width,
            ms,
            width,
            label=mode,
            color=["#999999", "#4477aa"][i],
        )
        bx.bar_label(bars, fmt="%.1f", fontsize=8)
    bx.set_xticks(np.arange(len(names)), names)
    bx.set(ylabel="median ms per training step")
    bx.set_title("step time: dense vs row-sparse gradients")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    data = make_data(args)
    results = [train(name, mode, data, args) for name in OPTIMIZERS for mode in MODES]
    results.append(train("adam", CATCH_UP, data, args))
    print(
        f"vocabulary {args.vocab:,} x {args.dim}, {args.steps} steps of {args.batch_size} documents;"
        f" test: {int(data[2].sum())} rare-token / {int((~data[2]).sum())} frequent-token documents"
    )
    header = f"{'optimizer':<9} {'gradients':<11} {'rare acc':>8} {'other acc':>9} {'ms/step':>8}"
    print(header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r['optimizer']:<9} {r['mode']:<11} {r['rare_accuracy']:>8.3f} "
            f"{r['frequent_accuracy']:>9.3f} {r['ms_per_step']:>8.2f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "sparse_embeddings.png"
    plot(results, figure)
    print(f"figure: {figure}")
    return results


if __name__ == "__main__":
    main()
