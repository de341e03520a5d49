"""Import time of adaptive_tx against optax alone: each import in a fresh interpreter.

Every round starts one new Python process per contender (`import optax`, `import adaptive_tx`,
and `pass` for the interpreter's own start), in rotating order (benchmarks/timing.py), and takes
the time the import statement itself took, measured inside the process. Prints the medians and
the ratio adaptive_tx / optax; the target is below 1.2 (adaptive_tx adds its own modules to
optax's, and jax, optax and chex are imported by both). Also lists the heavy packages an import
pulled in (flax, matplotlib, torch, keras, orbax): `import adaptive_tx` needs none of them.

    python benchmarks/import_time.py [--rounds 15] [--max-ratio 1.2]

Exits with status 1 when the ratio of medians is above ``--max-ratio``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from timing import interleaved_times  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEAVY = ("flax", "matplotlib", "torch", "keras", "orbax")
PROBE = (
    "import sys, time\n"
    "start = time.perf_counter()\n"
    "{statement}\n"
    "elapsed = time.perf_counter() - start\n"
    "heavy = [m for m in {heavy!r} if m in sys.modules]\n"
    "print(elapsed, ','.join(heavy))\n"
)
STATEMENTS = {"python": "pass", "optax": "import optax", "adaptive_tx": "import adaptive_tx"}


def import_once(statement: str) -> tuple[float, str]:
    """Seconds `statement` took in a fresh interpreter, and the heavy packages it imported."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    code = PROBE.format(statement=statement, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout.split()
    return float(out[0]), (out[1] if len(out) > 1 else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--max-ratio", type=float, default=1.2)
    args = parser.parse_args()
    heavy: dict[str, str] = {}
    seconds: dict[str, list[float]] = {name: [] for name in STATEMENTS}

    def contender(name: str):
        def run():
            elapsed, heavy[name] = import_once(STATEMENTS[name])
            seconds[name].append(elapsed)

        return run

    interleaved_times({name: contender(name) for name in STATEMENTS}, args.rounds, warmup=1)
    medians = {name: statistics.median(s[-args.rounds :]) for name, s in seconds.items()}
    print(f"{'statement':<22} {'median s':>9} {'min s':>7} {'max s':>7}  heavy packages imported")
    for name, statement in STATEMENTS.items():
        s = seconds[name][-args.rounds :]
        print(
            f"{statement:<22} {medians[name]:9.3f} {min(s):7.3f} {max(s):7.3f}  "
            f"{heavy[name] or '-'}"
        )
    ratio = medians["adaptive_tx"] / medians["optax"]
    print(f"import adaptive_tx / import optax: {ratio:.2f} (target < {args.max_ratio}), "
          f"{args.rounds} rounds, {sys.executable}")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
