"""Step time of each adaptive rule: adaptive_tx against optax, torch.optim and the memory roofline.

An optimizer step is memory traffic: Adam reads p, g, m, v and writes p, m, v (7 arrays); Adagrad and
RMSProp read p, g, s and write p, s (5 arrays). For every rule, size and layout (one leaf, or the same
number of coordinates split into many leaves) this script times, in one process and interleaved
round by round:

- ``adaptive_tx`` and ``optax``: the jitted step ``update`` + ``optax.apply_updates`` with the
  parameters and the state donated, after warm-up (compilation is never timed);
- ``torch foreach`` and ``torch fused``: ``torch.optim.<Rule>(foreach=True)`` / ``(fused=True)``
  where torch has them (fused: Adam, AdamW, Adagrad), on the same device as JAX (skipped when torch is
  absent, or is a CPU build while JAX runs on a GPU);
- ``axpy``: a jitted ``y <- y + a x`` with ``y`` donated (3 arrays), which gives the streaming bandwidth
  of this machine at this size, measured in the same rounds.

It reports medians, the ratio adaptive_tx / optax (median of the per-round ratios), the roofline (the rule's arrays x bytes / streaming
bandwidth) and the fraction of it each step reaches, and, from the compiled HLO of each JAX step, the
number of elementwise fusions, the bytes they move (XLA's cost analysis, in units of one parameter
array) and whether every state buffer is updated in place (aliased to its donated input).

Usage::

  python benchmarks/step_time.py                        # the full table (a few minutes)
  python benchmarks/step_time.py --methods adam --sizes 24 --leaves 1 --repeats 40
  python benchmarks/step_time.py --write                # also update benchmarks/RESULTS.md
  python benchmarks/step_time.py --quick                # tiny sizes, 3 rounds (used by the tests)
  python benchmarks/step_time.py --storages             # lean state storages against float32 state
  python benchmarks/step_time.py --storages --sizes 24  # (on a GPU: 2^24, device time in a loop)

With ``--storages`` it times instead Adam with each state storage of `STORAGES` (float32,
bfloat16, stochastic bfloat16, 8-bit, FP8) on one leaf of 2^22 coordinates (``--sizes``) and on
the leaf shapes of a small transformer (`TRANSFORMER`), interleaved round by round, and reports
step time, compile time and the bytes of the state, each as a ratio to float32 state in the
same run. On a GPU the step time is device time: many steps inside one jitted loop.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The repository (for adaptive_tx) and this folder (for timing), however this file is loaded.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from timing import interleaved_times

import adaptive_tx
from adaptive_tx.quantized import (
    QuantizedArray,
    from_blocks,
    scale_blocks,
    scales_shape,
    to_blocks,
)

METHODS = (
    "adam",
    "adamw",
    "adagrad",
    "rmsprop",
    "adamax",
    "nadam",
    "adopt",
    "adan",
    "ademamix",
    "laprop",
    "lamb",
    "adadelta",
    "adabelief",
    "yogi",
    "lion",
    "rprop",
    "sm3",
    "novograd",
    "schedule_free_adamw",
)
# torch.optim class and which implementations it has (fused exists for these on CPU and CUDA).
TORCH = {
    "adam": ("Adam", ("foreach", "fused")),
    "adamw": ("AdamW", ("foreach", "fused")),
    "adagrad": ("Adagrad", ("foreach", "fused")),
    "rmsprop": ("RMSprop", ("foreach",)),
    "adamax": ("Adamax", ("foreach",)),
    "nadam": ("NAdam", ("foreach",)),
    "adadelta": ("Adadelta", ("foreach",)),
    "rprop": ("Rprop", ("foreach",)),
}
LEARNING_RATE = 1e-3
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- step_time:begin -->", "<!-- step_time:end -->"
STORAGE_MARKERS = ("<!-- step_time_storages:begin -->", "<!-- step_time_storages:end -->")


class Config(NamedTuple):
    method: str
    size: int  # coordinates in all leaves together
    leaves: int


class Hlo(NamedTuple):
    fusions: int  # elementwise fusions over parameter-sized arrays
    arrays: float  # bytes the compiled step moves, in units of one parameter array
    in_place: bool  # every array output aliases a donated input


# ---------------------------------------------------------------- JAX contenders


def optax_twin(method: str) -> Callable:
    """optax's optimizer of that name (optax.contrib's for ADOPT, AdEMAMix and schedule-free
    AdamW); LaProp, which optax does not ship, as its composition from optax primitives."""
    if method == "laprop":
        return lambda lr: optax.chain(
            optax.scale_by_rms(0.999, 1e-8, eps_in_sqrt=False, bias_correction=True),
            optax.ema(0.9),
            optax.scale_by_learning_rate(lr),
        )
    return getattr(optax, method, None) or getattr(optax.contrib, method)


def split(flat: np.ndarray, leaves: int) -> dict:
    """`flat` as a dict of `leaves` 1-D leaves of (nearly) equal sizes: a model with many arrays."""
    return {
        f"leaf{i:04d}": jnp.asarray(part) for i, part in enumerate(np.array_split(flat, leaves))
    }


def jax_step(tx: optax.GradientTransformation) -> Callable:
    """The jitted training step (update + apply) with parameters and state donated."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def analyze(compiled, array_bytes: int) -> Hlo:
    """Fusion count, bytes moved (in parameter arrays) and in-place updates of a compiled step."""
    text = compiled.as_text()
    entry = text[text.index("\nENTRY") :]
    shapes = re.findall(r"= (\([^=]*?\)|\S+) fusion\(", entry)  # one or several outputs
    fusions = sum(bool(re.search(r"\[[0-9]", shape)) for shape in shapes)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # The entry's result tuple, in order; the outputs the size of a parameter leaf or more must
    # alias a donated input (scalars and the small packed hyperparameters are written afresh).
    outputs = re.findall(r"[a-z0-9]+\[([0-9,]*)\]", entry.split("\n", 2)[1].split("->", 1)[1])
    arrays = {
        i for i, dims in enumerate(outputs) if dims and math.prod(map(int, dims.split(","))) > 64
    }
    aliased = {int(i) for i in re.findall(r"\{(\d+)\}: \(", text.split("\n", 1)[0])}
    return Hlo(fusions, cost["bytes accessed"] / array_bytes, arrays <= aliased)


def make_jax(tx, flat_params, flat_grads, leaves) -> tuple[Callable, Hlo]:
    """A closure that runs one step (and waits for it), and the HLO analysis of that step."""
    params, grads = split(flat_params, leaves), split(flat_grads, leaves)
    state = tx.init(params)
    step = jax_step(tx).lower(params, state, grads).compile()
    hlo = analyze(step, flat_params.nbytes)
    carry = [params, state]

    def run():
        carry[0], carry[1] = step(carry[0], carry[1], grads)
        jax.block_until_ready(carry)

    return run, hlo


def make_axpy(flat_grads) -> Callable:
    """y <- y + a x with y donated: reads 2 arrays and writes 1."""
    axpy = jax.jit(lambda y, x: y + 0.5 * x, donate_argnums=0)
    x = jnp.asarray(flat_grads)
    carry = [jnp.zeros_like(x)]

    def run():
        carry[0] = axpy(carry[0], x)
        carry[0].block_until_ready()

    return run


def stat_arrays(method: str) -> int:
    """How many parameter-sized statistics the rule keeps (Adam: m and v)."""
    state = getattr(adaptive_tx, method)(LEARNING_RATE).init({"w": jnp.zeros(7)})
    return sum(leaf.shape == (7,) for leaf in jax.tree.leaves(state))


def roofline_arrays(method: str) -> int:
    """Arrays an ideal step moves: read g, p and the statistics; write p and the statistics."""
    return 1 + 2 * (1 + stat_arrays(method))


# ---------------------------------------------------------------- torch contenders


def torch_device():
    """The torch device matching JAX's backend, or None when torch cannot run there."""
    try:
        import torch
    except ImportError:
        return None
    if jax.default_backend() == "cpu":
        return torch.device("cpu")
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return None


def make_torch(method, kind, flat_params, flat_grads, leaves, device) -> Callable | None:
    """One torch.optim step on `leaves` tensors, or None if torch has no such implementation."""
    import torch

    name, kinds = TORCH.get(method, (None, ()))  # not in torch.optim: the rest
    if kind not in kinds:
        return None
    params = [
        torch.tensor(part, device=device, requires_grad=True)
        for part in np.array_split(flat_params, leaves)
    ]
    for p, g in zip(params, np.array_split(flat_grads, leaves)):
        p.grad = torch.tensor(g, device=device)
    try:
        optimizer = getattr(torch.optim, name)(params, lr=LEARNING_RATE, **{kind: True})
        optimizer.step()
    except (RuntimeError, ValueError, TypeError):  # this build has no such implementation
        return None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run():
        optimizer.step()
        sync()

    return run


# ---------------------------------------------------------------- timing


def measure(config: Config, repeats: int, device, rng) -> dict:
    """Times every contender of one configuration; returns a row of the table."""
    flat_params = rng.normal(size=config.size).astype(np.float32)
    flat_grads = rng.normal(size=config.size).astype(np.float32)
    runs, hlo = {"axpy": make_axpy(flat_grads)}, {}
    for lib in ("adaptive_tx", "optax"):
        factory = getattr(adaptive_tx, config.method) if lib == "adaptive_tx" else None
        tx = (factory or optax_twin(config.method))(LEARNING_RATE)
        runs[lib], hlo[lib] = make_jax(tx, flat_params, flat_grads, config.leaves)
    if device is not None:
        for kind in ("foreach", "fused"):
            run = make_torch(config.method, kind, flat_params, flat_grads, config.leaves, device)
            if run is not None:
                runs[f"torch {kind}"] = run
    times = interleaved_times(runs, repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    # Paired within each round, the ratio is less sensitive than a ratio of medians to load
    # that drifts over the run.
    ratio = statistics.median(a / o for a, o in zip(times["adaptive_tx"], times["optax"]))
    bandwidth = 3 * flat_params.nbytes / medians["axpy"]
    roofline = roofline_arrays(config.method) * flat_params.nbytes / bandwidth
    return {
        "config": config,
        "medians": medians,
        "ratio": ratio,
        "bandwidth": bandwidth,
        "roofline": roofline,
        "hlo": hlo,
    }


# ---------------------------------------------------------------- report


def size_label(size: int) -> str:
    exponent = size.bit_length() - 1
    return f"2^{exponent}" if size == 1 << exponent else str(size)


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3g}"


HEADER = (
    "| rule | N | leaves | adaptive_tx ms | optax ms | ratio | torch foreach ms | torch fused ms "
    "| roofline ms | fraction of roofline | HLO fusions (atx / optax) | HLO arrays moved "
    "(atx / optax / ideal) | in place |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(row: dict) -> str:
    c, m, hlo = row["config"], row["medians"], row["hlo"]
    ours, theirs = hlo["adaptive_tx"], hlo["optax"]
    return (
        f"| {c.method} | {size_label(c.size)} | {c.leaves} | {ms(m['adaptive_tx'])} "
        f"| {ms(m['optax'])} | {row['ratio']:.2f} | {ms(m.get('torch foreach'))} "
        f"| {ms(m.get('torch fused'))} | {ms(row['roofline'])} "
        f"| {row['roofline'] / m['adaptive_tx']:.2f} | {ours.fusions} / {theirs.fusions} "
        f"| {ours.arrays:.1f} / {theirs.arrays:.1f} / {roofline_arrays(c.method)} "
        f"| {'yes' if ours.in_place else 'NO'} |"
    )


def machine() -> str:
    """CPU model and cores (or the accelerator), and the library versions."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        model = platform.processor() or "unknown CPU"
        try:
            with open("/proc/cpuinfo") as f:
                models = re.findall(r"^model name\s*:\s*(.*)$", f.read(), re.MULTILINE)
            model = models[0] if models else model
        except OSError:
            pass
        where = f"{model}, {os.cpu_count()} cores"
    else:
        where = f"{device.device_kind} ({device.platform}), host with {os.cpu_count()} cores"
    try:
        import torch

        torch_version = f", torch {torch.__version__}"
    except ImportError:
        torch_version = ", torch absent"
    flags = f"; XLA_FLAGS={os.environ['XLA_FLAGS']}" if os.environ.get("XLA_FLAGS") else ""
    return f"{where}; jax {jax.__version__}, optax {optax.__version__}{torch_version}{flags}"


def shown_args(argv: list[str]) -> list[str]:
    """The command-line arguments without --note and --results (the note has its own line)."""
    shown, skip = [], False
    for arg in argv:
        if not skip and arg.split("=")[0] not in ("--note", "--results"):
            shown.append(arg)
        skip = arg in ("--note", "--results")
    return shown


def report(rows: list[dict], args) -> str:
    bandwidths = {}
    for row in rows:
        bandwidths.setdefault(row["config"].size, []).append(row["bandwidth"])
    lines = [
        "## Step time (`benchmarks/step_time.py`)",
        "",
        f"Machine: {machine()}.",
        (
            f"Measured {datetime.date.today().isoformat()} with "
            f"`{' '.join(['python benchmarks/step_time.py', *shown_args(args.argv)])}`: median of "
            f"{args.repeats} interleaved rounds, float32, learning rate {LEARNING_RATE}."
        ),
    ]
    if args.note:
        lines.append(f"**{args.note}**")
    lines.append(
        "Streaming bandwidth (jitted axpy, median over the rows of that size): "
        + ", ".join(
            f"{size_label(size)}: {statistics.median(b) / 1e9:.1f} GB/s"
            for size, b in sorted(bandwidths.items())
        )
        + "."
    )
    if args.peak_bandwidth:
        lines.append(f"Nominal peak bandwidth given: {args.peak_bandwidth} GB/s.")
    lines += [
        "",
        (
            "ratio = median over the rounds of adaptive_tx / optax, timed side by side in each "
            "round (below 1: adaptive_tx is faster). roofline = ideal arrays "
            "moved x N x 4 bytes / streaming bandwidth; fraction of roofline = roofline / "
            "adaptive_tx's time, the fraction of the measured memory (on a GPU: HBM) bandwidth "
            "that adaptive_tx's step reaches. HLO arrays moved = bytes the compiled "
            "step's fusions read and write (XLA cost analysis) / (N x 4 bytes)."
        ),
        "",
        HEADER,
        *(table_row(row) for row in rows),
    ]
    if args.peak_bandwidth:
        lines += ["", "Fraction of the nominal peak bandwidth reached by adaptive_tx:"]
        for row in rows:
            c = row["config"]
            reached = roofline_arrays(c.method) * 4 * c.size / row["medians"]["adaptive_tx"]
            lines.append(
                f"- {c.method} {size_label(c.size)} x {c.leaves}: "
                f"{reached / 1e9 / args.peak_bandwidth:.2f}"
            )
    return "\n".join(lines)


def write_section(path: Path, section: str, markers: tuple[str, str] = (BEGIN, END)) -> None:
    """Replaces this script's section of RESULTS.md (between its markers), or appends it."""
    begin, end = markers
    block = f"{begin}\n{section}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# ---------------------------------------------------------------- lean state storages

class LinearCodes(QuantizedArray):
    """`LinearBlockwise`'s state of one leaf: int8 codes of a linear grid, one scale per block."""

    def widen(self) -> jax.Array:
        if self.codes.dtype == jnp.float32:  # a small leaf, kept whole
            return self.codes
        return scale_blocks(self.codes.astype(jnp.float32) * np.float32(1 / 127), self.scales)


class LinearBlockwise(NamedTuple):
    """The floor of a block-wise 8-bit state: not a storage to train with, a measuring rod.

    Each block of 256 keeps its absolute maximum and each coordinate ``round(127 x / absmax)``
    (a linear grid, nearest rounding: no map, no random bits, the fewest operations an encoder
    can have). Its step has everything `Int8Blockwise` and `Float8Blockwise` share (the
    reduction over each block of the new statistic, the passes and buffers the compiler makes
    of it) and nothing of their encoders, so the gap between this row and float32 is what the
    block structure costs, and the gap between it and them is what their encoders cost.
    Leaves smaller than ``min_size`` stay float32, as theirs do.
    """

    min_size: int = 4096
    reads_stored = False
    container = LinearCodes

    def init(self, param: jax.Array, value) -> LinearCodes:
        x = jnp.full(param.shape, value, jnp.float32)
        if math.prod(param.shape) < self.min_size:
            return LinearCodes(x, jnp.zeros((1,), jnp.float32))
        return self.encode(x, None, None)

    def encode(self, x: jax.Array, previous, key) -> LinearCodes:
        del key
        if previous is not None and previous.codes.dtype == jnp.float32:
            return LinearCodes(x, previous.scales)
        blocks = to_blocks(x)
        scales = jnp.max(jnp.abs(blocks), axis=-1)
        codes = jnp.round(blocks * (127 / jnp.where(scales > 0, scales, 1))[..., None])
        codes = from_blocks(codes.astype(jnp.int8), x.shape)
        return LinearCodes(codes, scales.reshape(scales_shape(x.shape)))


# (name, mu_dtype, nu_dtype) of Adam's state; the first row is the reference. One row per storage.
STORAGES = [
    ("float32", None, None),
    ("bfloat16", jnp.bfloat16, jnp.bfloat16),
    ("bfloat16_sr", "bfloat16_sr", "bfloat16_sr"),
    ("int8_blockwise", "int8_blockwise", "int8_blockwise"),
    ("int8_blockwise nearest", *(adaptive_tx.Int8Blockwise(stochastic=False),) * 2),
    ("float8_e4m3fn_blockwise", "float8_e4m3fn_blockwise", "float8_e4m3fn_blockwise"),
    ("mu e4m3fn, nu e5m2", "float8_e4m3fn_blockwise", "float8_e5m2_blockwise"),
    ("floor: linear 8-bit, nearest", LinearBlockwise(), LinearBlockwise()),
]

# The leaf shapes of a small transformer (d = 256, 4 layers, 8192-token vocabulary): 5.3M
# coordinates in 67 leaves of 9 shapes (kernels, biases, layer-norm scales and offsets).
_LAYER = {
    "q": (256, 256), "k": (256, 256), "v": (256, 256), "o": (256, 256),
    "q_b": (256,), "k_b": (256,), "v_b": (256,), "o_b": (256,),
    "mlp_in": (256, 1024), "mlp_in_b": (1024,), "mlp_out": (1024, 256), "mlp_out_b": (256,),
    "ln1_scale": (256,), "ln1_bias": (256,), "ln2_scale": (256,), "ln2_bias": (256,),
}  # fmt: skip
TRANSFORMER = {
    "embed": (8192, 256),
    **{f"layer{i}.{name}": shape for i in range(4) for name, shape in _LAYER.items()},
    "ln_f_scale": (256,),
    "ln_f_bias": (256,),
}


def storage_models(sizes: list[int], quick: bool) -> dict[str, dict]:
    """Parameter shapes: one square-ish leaf per size, and the transformer's leaves (quick: one
    layer of it, 1/8 of the rows)."""
    models = {}
    for exponent in sizes:
        rows = 1 << (exponent // 2)
        models[f"one leaf 2^{exponent}"] = {"w": (rows, (1 << exponent) // rows)}
    shapes = TRANSFORMER
    if quick:
        shapes = {k: (s[0] // 8,) + s[1:] for k, s in shapes.items() if "layer" not in k[:6]}
        shapes |= {k: s for k, s in TRANSFORMER.items() if k.startswith("layer0.")}
    models[f"transformer ({len(shapes)} leaves)"] = shapes
    return models


def make_storage_step(mu_dtype, nu_dtype, shapes: dict, loop: int, rng) -> tuple:
    """(run, compile seconds, state bytes) of Adam's donated step with this storage.

    With ``loop > 1`` one call runs `loop` steps inside one jitted ``fori_loop`` (device time on
    an accelerator, where a single call would time host dispatch); `run` returns per-step time.
    """
    tx = adaptive_tx.adam(LEARNING_RATE, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    grads = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def steps(params, state, grads):
        return jax.lax.fori_loop(0, loop, lambda _, c: step(*c, grads), (params, state))

    state = tx.init(params)
    nbytes = adaptive_tx.state_nbytes(state)
    start = time.perf_counter()
    compiled = (
        jax.jit(step if loop == 1 else steps, donate_argnums=(0, 1))
        .lower(params, state, grads)
        .compile()
    )
    compile_seconds = time.perf_counter() - start
    carry = [params, state]

    def run():
        carry[0], carry[1] = compiled(carry[0], carry[1], grads)
        jax.block_until_ready(carry)

    return run, compile_seconds, nbytes


def measure_storages(args) -> list[dict]:
    """Every storage x model, timed interleaved; ratios to float32 state in the same rounds."""
    rng = np.random.default_rng(0)
    loop = args.loop or (1 if jax.default_backend() == "cpu" else 100)
    rows = []
    for model, shapes in storage_models(args.sizes, args.quick).items():
        runs, compile_s, nbytes = {}, {}, {}
        for name, mu, nu in STORAGES:
            runs[name], compile_s[name], nbytes[name] = make_storage_step(mu, nu, shapes, loop, rng)
        times = interleaved_times(runs, args.repeats)
        reference = STORAGES[0][0]
        for name in runs:
            ratio = statistics.median(a / b for a, b in zip(times[name], times[reference]))
            rows.append({
                "model": model, "storage": name, "ms": statistics.median(times[name]) / loop * 1e3,
                "ratio": ratio, "compile": compile_s[name],
                "compile_ratio": compile_s[name] / compile_s[reference],
                "bytes": nbytes[name], "bytes_ratio": nbytes[name] / nbytes[reference],
            })  # fmt: skip
            print(storage_row(rows[-1]), flush=True)
    return rows


STORAGE_HEADER = (
    "| model | Adam state | step ms | step / float32 | compile s | compile / float32 "
    "| state MB | state / float32 |\n|---|---|---|---|---|---|---|---|"
)


def storage_row(row: dict) -> str:
    return (
        f"| {row['model']} | {row['storage']} | {row['ms']:.3g} | {row['ratio']:.2f} "
        f"| {row['compile']:.2f} | {row['compile_ratio']:.2f} | {row['bytes'] / 1e6:.1f} "
        f"| {row['bytes_ratio']:.3f} |"
    )


def storage_report(rows: list[dict], args) -> str:
    command = " ".join(["python benchmarks/step_time.py", *shown_args(args.argv)])
    lines = [
        "## Step time of lean state (`benchmarks/step_time.py --storages`)",
        "",
        f"Machine: {machine()}.",
        (
            f"Measured {datetime.date.today().isoformat()} with `{command}`: Adam, jitted and "
            f"donated step, median of {args.repeats} interleaved rounds; step / float32 is the "
            "median over the rounds of the ratio to the float32-state step of the same round. "
            "Compile time is one lowering and compilation of the step, in its own column."
        ),
    ]
    if args.note:
        lines.append(f"**{args.note}**")
    return "\n".join([*lines, "", STORAGE_HEADER, *(storage_row(r) for r in rows)])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[20, 24], help="log2 of the number of coordinates"
    )
    parser.add_argument("--leaves", nargs="+", type=int, default=[1, 512])
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 3 rounds (the tests)")
    parser.add_argument("--storages", action="store_true", help="lean state storages (Adam)")
    parser.add_argument("--loop", type=int, help="steps per timed call (default: 1 CPU, 100 GPU)")
    parser.add_argument("--no-torch", action="store_true", help="leave torch.optim out")
    parser.add_argument("--peak-bandwidth", type=float, help="nominal GB/s (e.g. HBM) to compare")
    parser.add_argument("--note", help="a line to print under the machine (e.g. 'under load')")
    parser.add_argument("--write", action="store_true", help="update the section in RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.storages and "--sizes" not in argv:
        args.sizes = [22]
    if args.quick:
        args.sizes, args.leaves, args.repeats = [12] if args.storages else [12, 14], [1, 8], 3
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.storages:
        print(machine(), flush=True)
        print(STORAGE_HEADER, flush=True)
        rows = measure_storages(args)
        if args.write:
            write_section(args.results, storage_report(rows, args), STORAGE_MARKERS)
            print(f"wrote the lean-state section of {args.results}")
        return rows
    device = None if args.no_torch else torch_device()
    if device is None and not args.no_torch:
        print("torch contenders skipped: torch absent or not on JAX's device", flush=True)
    rng = np.random.default_rng(0)
    rows = []
    print(machine(), flush=True)
    print(HEADER, flush=True)
    for method in args.methods:
        for exponent in args.sizes:
            for leaves in args.leaves:
                row = measure(Config(method, 1 << exponent, leaves), args.repeats, device, rng)
                rows.append(row)
                print(table_row(row), flush=True)
    section = report(rows, args)
    if args.write:
        write_section(args.results, section)
        print(f"wrote the step-time section of {args.results}")
    return rows


if __name__ == "__main__":
    main()
