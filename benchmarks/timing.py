"""The timing loop the benchmarks share: contenders interleaved round by round, in one process."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved_times(
    runs: dict[object, Callable[[], object]], rounds: int, warmup: int = 2
) -> dict[object, list[float]]:
    """Seconds per call of each zero-argument closure in each round, calling them in turn.

    Each closure is first called `warmup` times (compilation, first touch of memory). The order of
    the contenders rotates from round to round so that no contender always follows the same
    neighbour; a noisy machine then slows every contender alike, and ratios of medians hold.

    Example:
      >>> times = interleaved_times({"a": lambda: None, "b": lambda: None}, rounds=3, warmup=0)
      >>> {name: len(t) for name, t in times.items()}
      {'a': 3, 'b': 3}
    """
    for run in runs.values():
        for _ in range(warmup):
            run()
    names = list(runs)
    times: dict[object, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times
