"""A small flax.nnx transformer language model with row-sparse embedding updates.

The data are synthetic token sequences over a vocabulary of V tokens with a Zipf unigram law and a
hidden bigram rule: every token has a fixed, randomly chosen successor, and with probability
``--follow`` the next token is the successor of the current one, otherwise a fresh Zipf draw. The
model can learn each token's successor only from the sequences that contain it, so the rare
tokens, most of the vocabulary, are learned from the rows of the embedding table that a batch
almost never touches (a batch of B x T tokens touches at most B x T of the V rows).

The model is a pre-LayerNorm decoder-only transformer (token embedding ``adaptive_tx.sparse.Embed``,
learned positions, ``--layers`` blocks of causal self-attention and a GELU MLP, an untied output
layer). It is trained three times, in lockstep (each run takes batch t in turn, so their step
times are measured side by side), from the same initialization on the same batches, with one
optimizer chain (``sparse.prepare_rows``, ``sparse.clip_by_global_norm``, the ``--optimizer``
alias with a warmup-cosine learning rate):

  dense       ``nnx.value_and_grad``: the table's gradient is V x D and every row is updated;
  row-sparse  ``adaptive_tx.sparse.value_and_grad``: the table's gradient is a ``RowSparse`` of
              the looked-up rows; only those rows are read and written (lazy updates, the
              semantics of ``torch.optim.SparseAdam``); every other parameter is dense.
  catch-up    the same row-sparse gradients; the table's optimizer is
              ``adaptive_tx.sparse.catch_up(alias, ...)`` (``optax.partition``: the other
              parameters get the alias itself): a looked-up row first gets the zero-gradient
              steps it skipped, in closed form (the forward pass reads the rows through the
              optimizer's view, and the table is flushed before each evaluation and
              checkpoint): dense training's
              result with row-sparse gradients (for the aliases catch-up supports: adam,
              adamw, nadam, nadamw, amsgrad, rmsprop, adagrad).

Every ``--log-every`` steps it prints the held-out loss (all positions, and positions whose
current token was seen at most ``RARE`` times so far) and the effective-learning-rate summary of
each weight matrix (``adaptive_tx.effective_learning_rate_summary``). It checkpoints the model and
optimizer with orbax every ``--checkpoint-every`` steps under OUT/checkpoints/<mode>/ and
``--resume`` continues from the newest checkpoint there. It writes two figures:

  transformer_lm.png     held-out loss of the runs, and the median effective learning rate of
                         each layer during training;
  rare_token_rates.png   the effective learning rate of every embedding row at the end, against
                         how often its token was seen.

    python examples/transformer_lm.py out/lm                  # V = 16,384; 600 steps; ~8 minutes
    python examples/transformer_lm.py out/lm --optimizer adagrad --modes row-sparse
    python examples/transformer_lm.py out/lm --tiny           # seconds: what the tests run
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

import adaptive_tx as atx

# Each alias and whether it takes a weight decay.
OPTIMIZERS = {
    "adamw": (atx.adamw, True),
    "nadamw": (atx.nadamw, True),
    "adamaxw": (atx.adamaxw, True),
    "adam": (atx.adam, False),
    "amsgrad": (atx.amsgrad, False),
    "radam": (atx.radam, False),
    "rmsprop": (atx.rmsprop, False),
    "adagrad": (atx.adagrad, False),
}
CATCH_UP = "catch-up"
# Line style of each run in the figures.
STYLES = {"dense": "-", "row-sparse": "--", CATCH_UP: ":"}
MODES = ("dense", "row-sparse", CATCH_UP)
RARE = 10  # a token seen at most this often in training so far is rare
DYING = 1e-6  # effective_learning_rate_summary's threshold


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=pathlib.Path, help="folder for the figures and checkpoints")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adamw")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="peak of the schedule")
    p.add_argument("--weight-decay", type=float, default=0.01, help="for the *w optimizers")
    p.add_argument("--modes", default=",".join(MODES), help="a subset of " + ",".join(MODES))
    p.add_argument("--vocab", type=int, default=16_384)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--follow", type=float, default=0.7, help="P(next token = successor)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (the tests)")
    args = p.parse_args(argv)
    if args.tiny:
        args.vocab, args.dim, args.heads, args.layers = 2048, 16, 2, 1
        args.seq_len, args.batch_size, args.steps = 16, 8, 40
        args.log_every, args.checkpoint_every = 10, 20
    args.modes = tuple(m for m in args.modes.split(",") if m)
    if not args.modes or set(args.modes) - set(MODES):
        p.error(f"--modes must be a comma-separated subset of {','.join(MODES)}")
    if min(args.vocab, args.dim, args.seq_len, args.batch_size, args.steps, args.log_every) < 2:
        p.error("--vocab, --dim, --seq-len, --batch-size, --steps, --log-every must be >= 2")
    if args.dim % args.heads or not 0.0 <= args.follow < 1.0:
        p.error("--dim must be a multiple of --heads, and --follow in [0, 1)")
    if CATCH_UP in args.modes:
        try:
            atx.sparse.catch_up(OPTIMIZERS[args.optimizer][0], 1e-3)
        except ValueError as error:
            p.error(f"{error}; or leave {CATCH_UP} out of --modes")
    return args


class Corpus:
    """Zipf tokens with a hidden successor per token; batch t is a pure function of (seed, t)."""

    def __init__(self, args):
        rng = np.random.default_rng(args.seed)
        zipf = 1.0 / np.arange(1, args.vocab + 1) ** 1.1
        self.zipf = zipf / zipf.sum()
        self.cdf = np.cumsum(self.zipf)
        self.successor = rng.permutation(args.vocab).astype(np.int32)
        self.args = args

    def draw(self, rng, n):
        return np.minimum(np.searchsorted(self.cdf, rng.random(n)), self.args.vocab - 1)

    def sequences(self, rng, num):
        a = self.args
        tokens = np.empty((num, a.seq_len + 1), np.int32)
        tokens[:, 0] = self.draw(rng, num)
        for i in range(1, a.seq_len + 1):
            follow = rng.random(num) < a.follow
            tokens[:, i] = np.where(follow, self.successor[tokens[:, i - 1]], self.draw(rng, num))
        return tokens

    def batch(self, t):
        return self.sequences(np.random.default_rng([self.args.seed, t]), self.args.batch_size)

    def optimal_loss(self):
        """The expected cross-entropy of the true next-token law (the loss floor), in nats."""
        f, z = self.args.follow, self.zipf
        p_succ = f + (1 - f) * z[self.successor]  # P(successor | current), per current token
        # Every other token x: (1 - f) z_x; sum over x != succ of -(1-f) z_x log((1-f) z_x).
        others = -(1 - f) * z * np.log((1 - f) * z)
        h = -p_succ * np.log(p_succ) + others.sum() - others[self.successor]
        marginal, floor = z, 0.0  # the law of the current token at positions 0, 1, ...
        for _ in range(self.args.seq_len):
            floor += (marginal * h).sum() / self.args.seq_len
            marginal = (1 - f) * z + f * np.bincount(self.successor, marginal, minlength=z.size)
        return float(floor)


class Block(nnx.Module):
    def __init__(self, dim, heads, *, rngs):
        self.attention_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            heads, dim, decode=False, keep_rngs=False, rngs=rngs
        )
        self.mlp_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_in = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * dim, dim, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.attention(self.attention_norm(x), mask=mask)
        return x + self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x))))


class TransformerLM(nnx.Module):
    def __init__(self, args, *, rngs):
        init = nnx.initializers.normal(0.02)
        # sparse.Embed is nnx.Embed, plus row-sparse gradients under sparse.value_and_grad.
        self.embed = atx.sparse.Embed(args.vocab, args.dim, embedding_init=init, rngs=rngs)
        self.position = nnx.Param(init(rngs.params(), (args.seq_len, args.dim)))
        self.blocks = nnx.List([Block(args.dim, args.heads, rngs=rngs) for _ in range(args.layers)])
        self.final_norm = nnx.LayerNorm(args.dim, rngs=rngs)
        self.head = nnx.Linear(args.dim, args.vocab, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.final_norm(x))


def token_losses(model, tokens):
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])


def loss_fn(model, tokens):
    return token_losses(model, tokens).mean()


def label_table(tree):
    """``optax.partition``'s labels: "table" for the embedding table, "rest" for the others."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "table" if path_key(path)[:2] == ("embed", "embedding") else "rest", tree
    )


def path_key(path):
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def make_optimizer(args, mode):
    """The chain, and the table's `sparse.catch_up` (catch-up mode; None otherwise)."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.learning_rate, max(args.steps // 20, 1), args.steps, 0.1 * args.learning_rate
    )
    alias, decays = OPTIMIZERS[args.optimizer]
    kwargs = {"weight_decay": args.weight_decay} if decays else {}
    catch_up, rule = None, alias(schedule, **kwargs)
    if mode == CATCH_UP:
        # Only the table has row-sparse gradients: the dense leaves need no catch-up.
        catch_up = atx.sparse.catch_up(alias, schedule, **kwargs)
        rule = optax.partition({"table": catch_up, "rest": rule}, label_table)
    chain = optax.chain(
        atx.sparse.prepare_rows(),  # passes dense leaves through; sums repeated rows
        atx.sparse.clip_by_global_norm(1.0),  # the same norm for caught-up rows as dense
        rule,
    )
    return chain, catch_up


def loss_and_grads(mode, rule=None, optimizer=None):
    """The loss and its gradient: the table's is V x D (dense) or a RowSparse (row-sparse,
    catch-up). Catch-up's forward pass reads the looked-up rows caught up, as dense training has
    them (`rule.view` of the catch-up state in the optimizer's state)."""
    if mode == "dense":
        return nnx.value_and_grad(loss_fn)
    view = None
    if mode == CATCH_UP:
        view = rule.view(nnx.as_pure(optimizer.opt_state))
    return atx.sparse.value_and_grad(loss_fn, view=view)


def make_step(mode, rule):
    @nnx.jit(donate_argnums=(0, 1))
    def step(model, optimizer, tokens):
        loss, grads = loss_and_grads(mode, rule, optimizer)(model, tokens)
        optimizer.update(model, grads)
        return loss

    return step


def flush(run):
    """Catch-up: every row brought up to date (evaluation and checkpoints read every row)."""
    if run.mode == CATCH_UP:
        _flush(run.model, run.optimizer, run.rule)


@nnx.jit(static_argnums=2)
def _flush(model, optimizer, rule):
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    new_params, new_state = rule.flush(nnx.as_pure(optimizer.opt_state), params)
    nnx.update(model, new_params)
    nnx.update(optimizer.opt_state, nnx.state(new_state))


def gradient_ms(runs, tokens, repeats=10):
    """Each run's median time of the forward and backward pass alone (no optimizer), the runs
    timed in turn, round by round."""
    def gradient(run):
        return nnx.jit(lambda m, o, x: loss_and_grads(run.mode, run.rule, o)(m, x))

    gradients = [gradient(run) for run in runs]
    for run, fn in zip(runs, gradients):
        jax.block_until_ready(fn(run.model, run.optimizer, tokens))  # compiles
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, fn, ts in zip(runs, gradients, times):
            tic = time.perf_counter()
            jax.block_until_ready(fn(run.model, run.optimizer, tokens))
            ts.append(time.perf_counter() - tic)
    return [1e3 * float(np.median(ts)) for ts in times]


@nnx.jit
def evaluate(model, tokens):
    return token_losses(model, tokens)


@jax.jit
def rate_summary(opt_state, seen_rows):
    # Rows never looked up have Adam's v = 0 and the rate eta/eps; summarize the seen ones.
    return atx.effective_learning_rate_summary(opt_state, DYING, {"embed/embedding": seen_rows})


@jax.jit
def row_rates(opt_state):
    """The median effective learning rate of each embedding row (one compiled program)."""
    rates = atx.effective_learning_rate(opt_state)["embed"]["embedding"]
    return jnp.median(rates, axis=1)


def is_layer(path: str) -> bool:
    """The weight matrices: one line per layer in the log (biases and norm scales left out)."""
    return path.endswith(("kernel", "embedding", "position"))


def checkpoint_target(model, optimizer):
    """What a checkpoint holds: the model's and the optimizer's state, as nested dicts of arrays."""
    return {
        "model": nnx.to_pure_dict(nnx.state(model)),
        "optimizer": nnx.to_pure_dict(nnx.state(optimizer)),
    }


def restore(manager, model, optimizer):
    """Loads the newest checkpoint into `model` and `optimizer`; returns its step (0 if none)."""
    step = manager.latest_step()
    if step is None:
        return 0
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, checkpoint_target(model, optimizer))
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    for obj, key in ((model, "model"), (optimizer, "optimizer")):
        state = nnx.state(obj)
        nnx.replace_by_pure_dict(state, restored[key])
        nnx.update(obj, state)
    return step


class Run:
    """One training run: a model, its optimizer, the step for its mode, its checkpoints."""

    def __init__(self, mode, args):
        self.mode, self.times, self.log = mode, [], []
        self.model = TransformerLM(args, rngs=nnx.Rngs(args.seed))
        chain, self.rule = make_optimizer(args, mode)
        self.optimizer = nnx.Optimizer(self.model, chain, wrt=nnx.Param)
        self.step = make_step(mode, self.rule)
        self.manager = ocp.CheckpointManager(
            (args.out / "checkpoints" / mode).resolve(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        )
        self.start = restore(self.manager, self.model, self.optimizer) if args.resume else 0


def train(corpus, eval_tokens, args):
    """The runs in lockstep, so their step times are measured side by side: each takes batch t
    in turn. Returns per run its log, step times, final per-row embedding rates and parameters."""
    runs = [Run(mode, args) for mode in args.modes]
    start = min(run.start for run in runs)
    seen = np.zeros(args.vocab, np.int64)  # how often each token was an input so far
    for t in range(1, start + 1):
        seen += np.bincount(corpus.batch(t)[:, :-1].ravel(), minlength=args.vocab)
    for t in range(start + 1, args.steps + 1):
        tokens = corpus.batch(t)
        seen += np.bincount(tokens[:, :-1].ravel(), minlength=args.vocab)
        for run in runs:
            if t <= run.start:  # resumed from a later checkpoint than the other run
                continue
            tic = time.perf_counter()
            loss = jax.block_until_ready(run.step(run.model, run.optimizer, jnp.asarray(tokens)))
            run.times.append(time.perf_counter() - tic)
            log, save = (
                t % n == 0 or t == args.steps for n in (args.log_every, args.checkpoint_every)
            )
            if log or save:
                flush(run)  # catch-up: every row up to date before evaluating and saving
            if log:
                run.log.append(log_point(t, float(loss), run, seen, eval_tokens))
            if save:
                target = checkpoint_target(run.model, run.optimizer)
                run.manager.save(t, args=ocp.args.StandardSave(target))
    gradient_times = gradient_ms(runs, jnp.asarray(corpus.batch(args.steps)))
    results = []
    for run, grad_ms in zip(runs, gradient_times):
        run.manager.wait_until_finished()
        run.manager.close()
        results.append(
            {
                "mode": run.mode,
                "log": run.log,
                "ms_per_step": 1e3 * float(np.median(run.times[1:] or [np.nan])),  # 1: compiles
                "gradient_ms": grad_ms,
                "row_rates": np.asarray(row_rates(run.optimizer.opt_state)),
                "seen": seen,
                "params": nnx.state(run.model, nnx.Param),
            }
        )
    return results


def log_point(t, train_loss, run, seen, eval_tokens):
    losses = np.concatenate(
        [np.asarray(evaluate(run.model, jnp.asarray(c))) for c in np.split(eval_tokens, 4)]
    )
    rare = seen[eval_tokens[:, :-1]] <= RARE
    summary = {
        path: {field: float(value) for field, value in s._asdict().items()}
        for path, s in rate_summary(run.optimizer.opt_state, jnp.asarray(seen > 0)[:, None]).items()
        if is_layer(path)
    }
    point = {
        "step": t,
        "train_loss": train_loss,
        "eval_loss": float(losses.mean()),
        "rare_loss": float(losses[rare].mean()) if rare.any() else float("nan"),
        "rates": summary,
    }
    print(
        f"[{run.mode}] step {t:5d}  train {train_loss:.3f}  held-out {point['eval_loss']:.3f}"
        f"  rare-token positions {point['rare_loss']:.3f}"
    )
    print(f"    {'effective learning rate':<34} {'min':>9} {'median':>9} {'max':>9} {'dying':>6}")
    # embed/embedding: over the rows looked up so far (`where`); the others: every coordinate.
    for path, s in summary.items():
        print(
            f"    {path:<34} {s['min']:9.2e} {s['median']:9.2e} {s['max']:9.2e}"
            f" {s['fraction_below']:6.1%}"
        )
    return point


def plot_training(results, optimal, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1, 1.25]})
    style_names = {"-": "solid", "--": "dashed", ":": "dotted"}
    for r in results:
        steps = [p["step"] for p in r["log"]]
        for key, color, what in (
            ("eval_loss", "C0", "all positions"),
            ("rare_loss", "C3", f"rare current token (seen <= {RARE}x)"),
        ):
            ax.plot(
                steps,
                [p[key] for p in r["log"]],
                STYLES[r["mode"]],
                color=color,
                label=f"{what}, {r['mode']} ({r['ms_per_step']:.0f} ms/step)",
            )
    ax.axhline(
        optimal, color="black", lw=0.8, ls=":", label=f"loss floor of the data ({optimal:.2f})"
    )
    ax.set(xlabel="training step", ylabel="held-out cross-entropy (nats)")
    ax.set_title(f"{args.optimizer}: dense, row-sparse and catch-up embedding updates")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    names = list(results[0]["log"][0]["rates"])
    colors = plt.cm.tab20(np.linspace(0, 1, 20))
    for i, name in enumerate(names):
        for r in results:
            bx.plot(
                [p["step"] for p in r["log"]],
                [p["rates"][name]["median"] for p in r["log"]],
                STYLES[r["mode"]],
                color=colors[i % 20],
                label=name if r is results[0] else None,
            )
    bx.set_yscale("log")
    bx.set(xlabel="training step", ylabel="median effective learning rate (log)")
    modes = ", ".join(
        f"{r['mode']}: {style_names[STYLES[r['mode']]]}" for r in results
    )
    bx.set_title(f"per layer ({modes}); embedding: rows seen so far")
    bx.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    bx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rare_rates(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def binned(r):
        seen = r["seen"] > 0
        counts, rates = r["seen"][seen], r["row_rates"][seen]
        bins = np.digitize(counts, np.unique(np.geomspace(1, counts.max() + 1, 25).astype(int)))
        groups = [bins == b for b in np.unique(bins)]
        return (
            counts,
            rates,
            [np.median(counts[g]) for g in groups],
            [np.median(rates[g]) for g in groups],
        )

    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 4.6), sharey=True)
    for ax, r in zip(np.atleast_1d(axes), results):
        counts, rates, centers, medians = binned(r)
        ax.scatter(counts, rates, s=3, alpha=0.3, color="C0", label="one embedding row")
        ax.plot(centers, medians, color="C3", lw=2, label="median per count bin")
        for other in results:
            if other is not r:
                ax.plot(
                    *binned(other)[2:],
                    color="gray",
                    ls=STYLES[other["mode"]],
                    label=f"{other['mode']}'s median",
                )
        ax.set(xscale="log", yscale="log", xlabel="times the token was seen in training")
        ax.set_title(f"{r['mode']} embedding updates: {counts.size:,} of {args.vocab:,} rows seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel(f"{args.optimizer} effective learning rate (row median)")
    fig.suptitle(
        "Rare tokens keep larger steps: each embedding row's effective learning rate at the end"
        " (rows never seen are left out)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_rates_by_count(results):
    """The median final effective learning rate of the embedding rows, by how often seen."""
    groups = {"1": (1, 1), "2-10": (2, 10), "11-100": (11, 100), "101-1000": (101, 1000)}
    groups[">1000"] = (1001, np.inf)
    print("\nembedding rows' effective learning rate at the end, median by times seen:")
    print(f"{'times seen':<18}" + "".join(f"{name:>10}" for name in groups))
    for r in results:
        counts, rates = r["seen"], r["row_rates"]
        picked = [rates[(lo <= counts) & (counts <= hi)] for lo, hi in groups.values()]
        print(
            f"{r['mode']:<18}"
            + "".join(f"{np.median(x) if x.size else np.nan:10.3g}" for x in picked)
        )


def experiment(args):
    """The runs of `args` on their corpus: (the runs' results, the data's loss floor)."""
    corpus = Corpus(args)
    eval_tokens = corpus.sequences(np.random.default_rng([args.seed, 2**32 - 1]), 128)
    optimal = corpus.optimal_loss()
    print(
        f"vocabulary {args.vocab:,}, {args.layers} layers of width {args.dim}, "
        f"{args.steps} steps of {args.batch_size} x {args.seq_len} tokens, {args.optimizer}; "
        f"loss floor {optimal:.3f} nats, uniform guess {np.log(args.vocab):.3f}"
    )
    return train(corpus, eval_tokens, args), optimal


def main(argv=None):
    args = parse_args(argv)
    results, optimal = experiment(args)
    header = f"{'embedding updates':<18} {'ms/step':>8} {'of which fwd+bwd':>17}"
    print(f"\n{header} {'held-out':>9} {'rare pos.':>9}")
    for r in results:
        last = r["log"][-1]
        print(
            f"{r['mode']:<18} {r['ms_per_step']:8.1f} {r['gradient_ms']:17.1f}"
            f" {last['eval_loss']:9.3f} {last['rare_loss']:9.3f}"
        )
    print(
        "(medians; fwd+bwd: the forward and backward pass alone, timed apart. The table's own"
        " update is what row-sparse saves: see benchmarks/sparse_rows.py --rows V --ks B*T)"
    )
    print_rates_by_count(results)
    args.out.mkdir(parents=True, exist_ok=True)
    files = [args.out / "transformer_lm.png", args.out / "rare_token_rates.png"]
    plot_training(results, optimal, args, files[0])
    plot_rare_rates(results, args, files[1])
    print("figures: " + ", ".join(map(str, files)))
    return {"results": results, "optimal_loss": optimal, "files": files}


if __name__ == "__main__":
    main()
