"""Where an Adam step's time goes, kernel by kernel, for each state storage.

For each storage (``--storages``, names as in ``step_time.py --storages``) this script compiles the
jitted, donated Adam step on one leaf of ``2^--size`` coordinates, runs it under
``jax.profiler.trace`` and reads the trace back (`jax.profiler.ProfileData`): the time of every
compiled kernel (XLA's fusions and copies, summed over the threads that ran it) per step, beside
what the compiled program holds: its kernels, the state copies XLA inserts to update donated
buffers in place, and the bytes of temporary buffers each call allocates.

Usage::

  python benchmarks/profile_step.py                              # every storage, 2^22
  python benchmarks/profile_step.py --storages int8_blockwise --size 20 --steps 20
"""

from __future__ import annotations

import argparse
import collections
import glob
import sys
import tempfile
from pathlib import Path

import jax

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
import step_time

import adaptive_tx


def compiled_step(mu_dtype, nu_dtype, size: int):
    """The compiled donated Adam step (`step_time.jax_step`) on `step_time`'s one leaf of 2^size
    coordinates, with its carry (parameters, state) and gradient."""
    tx = adaptive_tx.adam(1e-3, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    shape = step_time.storage_models([size], quick=False)[f"one leaf 2^{size}"]["w"]
    params = {"w": jax.random.normal(jax.random.key(0), shape)}
    grads = {"w": jax.random.normal(jax.random.key(1), shape)}
    state = tx.init(params)
    compiled = step_time.jax_step(tx).lower(params, state, grads).compile()
    return compiled, [params, state], grads


def kernel_times(compiled, carry: list, grads, steps: int) -> dict[str, float]:
    """Seconds per step of each kernel (fusion or copy), from a profiler trace of `steps` steps."""
    for _ in range(3):  # warm-up: first touch of memory
        carry[:] = compiled(*carry, grads)
    jax.block_until_ready(carry)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for _ in range(steps):
                carry[:] = compiled(*carry, grads)
                jax.block_until_ready(carry)
        (path,) = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
        profile = jax.profiler.ProfileData.from_file(path)
    totals = collections.defaultdict(float)
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                if "fusion" in event.name or event.name.startswith("copy"):
                    if not event.name.startswith("end:"):
                        totals[event.name] += event.duration_ns * 1e-9 / steps
    return dict(totals)


def program_facts(compiled) -> dict:
    """Kernels, inserted copies and temporary bytes of a compiled step."""
    text = compiled.as_text()
    entry = text[text.index("\nENTRY") :]
    return {
        "kernels": entry.count(" fusion("),
        "copies": entry.count(" copy("),
        "temp_mb": compiled.memory_analysis().temp_size_in_bytes / 1e6,
    }


def main(argv: list[str] | None = None) -> dict[str, dict]:
    names = [name for name, _, _ in step_time.STORAGES]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storages", nargs="+", choices=names, default=names)
    parser.add_argument("--size", type=int, default=22, help="log2 of the leaf's coordinates")
    parser.add_argument("--steps", type=int, default=10, help="steps traced")
    parser.add_argument("--top", type=int, default=8, help="kernels listed per storage")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    specs = {name: (mu, nu) for name, mu, nu in step_time.STORAGES}
    print(step_time.machine())
    results = {}
    for name in args.storages:
        compiled, carry, grads = compiled_step(*specs[name], args.size)
        times = kernel_times(compiled, carry, grads, args.steps)
        facts = program_facts(compiled)
        results[name] = {"times": times, **facts}
        total = sum(times.values())
        print(
            f"\n{name}: kernels {total * 1e3:.2f} ms per step; {facts['kernels']} fusions, "
            f"{facts['copies']} copies, {facts['temp_mb']:.1f} MB of temporaries per call"
        )
        for kernel, seconds in sorted(times.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {seconds * 1e3:8.3f} ms  {seconds / total:5.1%}  {kernel}")
    return results


if __name__ == "__main__":
    main()
