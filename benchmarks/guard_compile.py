"""Compile time of the non-finite guard: adaptive_tx.skip_nonfinite against optax.apply_if_finite.

A guard that decides per leaf makes XLA compile one select and one reduction per leaf, fused with
the flag that depends on every leaf; compile time then grows faster than the model. For each
number of leaves this script builds the same inner optimizer (``adaptive_tx.adam``) on parameters
of mixed shapes (a matrix, a bias, a 3-d kernel, in turn) and, in one process and interleaved
round by round, lowers and compiles the jitted ``update`` of:

- ``skip_nonfinite``: ``adaptive_tx.skip_nonfinite(inner)``;
- ``apply_if_finite``: ``optax.apply_if_finite(inner, max_consecutive_errors=5)`` (the anchor);
- ``unguarded``: ``inner`` alone (what the guard adds is the difference).

Each round compiles a fresh program (the learning rate differs by 1e-6 between rounds, so no
executable is reused). It prints the median tracing + lowering time and, in its own column, the
median XLA compile time, and the ratio skip_nonfinite / apply_if_finite of the compile medians.
The compiled guards are run once on finite gradients, and their updates must agree.

Usage::

  python benchmarks/guard_compile.py                    # 10, 100 and 1000 leaves (a few minutes)
  python benchmarks/guard_compile.py --leaves 10,100 --rounds 5
  python benchmarks/guard_compile.py --write            # also update benchmarks/RESULTS.md
  python benchmarks/guard_compile.py --tiny             # 3 and 6 leaves, one round (the tests)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The repository (for adaptive_tx) and this folder (for timing), however this file is loaded.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from timing import interleaved_times

import adaptive_tx

SHAPES = ((16, 8), (8,), (4, 4, 2))
CONTENDERS = ("skip_nonfinite", "apply_if_finite", "unguarded")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- guard_compile:begin -->", "<!-- guard_compile:end -->"


def make_params(leaves: int) -> dict:
    """`leaves` float32 arrays, the shapes of SHAPES in turn, filled with distinct values."""
    rng = np.random.default_rng(0)
    return {
        f"layer{i:04d}": jnp.asarray(rng.normal(size=SHAPES[i % len(SHAPES)]), jnp.float32)
        for i in range(leaves)
    }


def make_tx(name: str, learning_rate: float) -> optax.GradientTransformation:
    inner = adaptive_tx.adam(learning_rate)
    if name == "skip_nonfinite":
        return adaptive_tx.skip_nonfinite(inner)
    if name == "apply_if_finite":
        return optax.apply_if_finite(inner, max_consecutive_errors=5)
    return inner


def compile_once(name: str, params: dict, learning_rate: float) -> tuple[float, float, object]:
    """Seconds to trace and lower, seconds to compile, and the executable's first updates."""
    tx = make_tx(name, learning_rate)
    state = tx.init(params)
    start = time.perf_counter()
    lowered = jax.jit(lambda g, s, p: tx.update(g, s, p)).lower(params, state, params)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    updates, _ = compiled(params, state, params)
    return lowered_at - start, compiled_at - lowered_at, updates


def measure(leaves: int, rounds: int) -> dict:
    """Median lowering and compile seconds of every contender at this many leaves."""
    params = make_params(leaves)
    rounds_seen = {name: 0 for name in CONTENDERS}
    lower_times = {name: [] for name in CONTENDERS}
    updates = {}

    def runner(name):
        def run():
            rate = 1e-3 * (1 + 1e-6 * rounds_seen[name])  # a new program every round
            rounds_seen[name] += 1
            lowering, compiling, updates[name] = compile_once(name, params, rate)
            lower_times[name].append(lowering)
            return compiling

        return run

    compile_times = {name: [] for name in CONTENDERS}

    def timed(name):
        run = runner(name)
        return lambda: compile_times[name].append(run())

    interleaved_times({name: timed(name) for name in CONTENDERS}, rounds=rounds, warmup=0)
    a, b = updates["skip_nonfinite"], updates["apply_if_finite"]
    worst = max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    assert worst <= 1e-6, f"the guards' updates differ by {worst}"
    row = {"leaves": leaves}
    for name in CONTENDERS:
        row[f"{name} lower"] = statistics.median(lower_times[name])
        row[f"{name} compile"] = statistics.median(compile_times[name])
    row["ratio"] = row["skip_nonfinite compile"] / row["apply_if_finite compile"]
    return row


def table(rows: list[dict]) -> str:
    header = (
        "| leaves | skip_nonfinite compile (s) | apply_if_finite compile (s) | unguarded compile (s) "
        "| ratio skip / apply_if_finite | trace + lower (s): skip, apply_if_finite, unguarded |\n"
        "|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['leaves']} | {r['skip_nonfinite compile']:.2f} | {r['apply_if_finite compile']:.2f} "
        f"| {r['unguarded compile']:.2f} | {r['ratio']:.2f}x | "
        + ", ".join(f"{r[f'{n} lower']:.2f}" for n in CONTENDERS)
        + " |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def write_results(text: str) -> None:
    content = RESULTS.read_text()
    start, stop = content.index(BEGIN) + len(BEGIN), content.index(END)
    RESULTS.write_text(content[:start] + "\n" + text + content[stop:])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", default="10,100,1000", help="comma-separated leaf counts")
    parser.add_argument("--rounds", type=int, default=3, help="compilations per contender")
    parser.add_argument("--tiny", action="store_true", help="3 and 6 leaves, one round")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    counts = [3, 6] if args.tiny else [int(n) for n in args.leaves.split(",")]
    rounds = 1 if args.tiny else args.rounds
    rows = []
    for leaves in counts:
        rows.append(measure(leaves, rounds))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    stamp = (
        f"{datetime.date.today()}, {platform.machine()}, jax {jax.__version__}, "
        f"optax {optax.__version__}, {jax.devices()[0].platform}, median of {rounds} compilations"
    )
    print(f"\n{stamp}\n\n{text}")
    if args.write:
        write_results(f"\n{stamp}\n\n{text}\n")
    return rows


if __name__ == "__main__":
    main()
