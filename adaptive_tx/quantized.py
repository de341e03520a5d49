r"""Quantized statistics: the 8-bit dynamic map and blockwise FP8.

The storages `Int8Blockwise` (Dettmers et al.'s dynamic map, one absmax per block of 256) and
`Float8Blockwise` (a float8 cast, one absmax per block of 256) live here, with the arithmetic they
share: the blocks themselves. Their stochastic rounding draws its bits from
`adaptive_tx.counter_bits` (cheap counter-based bits).
Every operation is elementwise on the coordinates or a reduction over a block of 256 along the
last axis: no sort, no search, no scatter, so a step stays one pass over memory.

References: Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise Quantization",
ICLR 2022, https://arxiv.org/abs/2110.02861 ; Peng et al., "FP8-LM: Training FP8 Large Language
Models", 2023, https://arxiv.org/abs/2310.18313
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from adaptive_tx._layout import (
    BLOCK_SIZE,
    explicit_sharding,
    full_like,
    keep_layout,
    mesh_size,
    placeholder,
)
from adaptive_tx.counter_bits import fold_in, random_bits, uniform  # noqa: F401 (re-exported)

# ---------------------------------------------------------------- the dynamic map


def _decade_constants(signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per decade e = 0..6: the grid's spacing and its first entry in units of it, float32."""
    cells = (64 if signed else 128) / 2.0 ** np.arange(7)
    spacing = 10.0 ** -np.arange(7) * 0.9 / cells
    return (cells / 9 + 0.5).astype(np.float32), spacing.astype(np.float32)


_DECADES = {signed: _decade_constants(signed) for signed in (True, False)}


def _positive_entry(n, signed: bool, xp):
    """The map's positive entries below 1 from ``n`` = 1 + their rank (signed: 1..127; unsigned,
    where the rank starts at the entry 0: 2..255).

    Rank ``n - 1`` lies in decade ``e`` with ``2^L <= n < 2^(L+1)`` cells (``L = 6 - e`` signed,
    ``7 - e`` unsigned) as cell ``n - 2^L``: the entry is ``(offset[e] + cell) * spacing[e]``, an
    add then a multiply (no multiply-add that a compiler could contract into an FMA, so every
    backend and numpy round it alike). `xp` is numpy (the table) or jax.numpy (the step).
    """
    offset, spacing = _DECADES[signed]
    top = 6 if signed else 7
    level = 31 - (jax.lax.clz(n) if xp is jnp else _clz_np(n))
    cell = (n - (xp.int32(1) << level)).astype(xp.float32)
    a, b = xp.float32(offset[0]), xp.float32(spacing[0])
    for e in range(1, 7):
        at = level == top - e
        a, b = xp.where(at, xp.float32(offset[e]), a), xp.where(at, xp.float32(spacing[e]), b)
    return ((a + cell) * b).astype(xp.float32)


def _clz_np(n: np.ndarray) -> np.ndarray:
    return (31 - np.floor(np.log2(np.maximum(n, 1)))).astype(np.int32)


def _entry(index, signed: bool, xp):
    """The map's entry at `index` (0..255), computed (no table read)."""
    index = xp.clip(index, 0, 255).astype(xp.int32)
    if signed:
        rank = xp.where(index >= 128, index - 127, 127 - index)  # 1..127 for the entries != 0, 1
        value = _positive_entry(xp.maximum(rank, 1), True, xp)
        value = xp.where(index < 127, -value, value)
        value = xp.where(index == 127, xp.float32(0), value)
    else:
        value = _positive_entry(xp.maximum(index, 1) + 1, False, xp)
        value = xp.where(index == 0, xp.float32(0), value)
    return xp.where(index == 255, xp.float32(1), value).astype(xp.float32)


def dynamic_map(signed: bool) -> np.ndarray:
    r"""The 256 values of the dynamic quantization map of Dettmers et al. (2022), sorted.

    For each exponent :math:`e = 0, \dots, 6` the map holds the midpoints of a linear grid on
    :math:`[0.1, 1]` times :math:`10^{-e}`: :math:`2^{6-e}` of them per sign (signed map, for first
    moments) or :math:`2^{7-e}` (unsigned map, for second moments); plus 0 and 1. Small magnitudes
    keep a few significant digits, so the map spans seven orders of magnitude below the block's
    absolute maximum. Each entry is computed in float32 as ``(offset[e] + cell) * spacing[e]``, the
    same arithmetic the step runs (no table is read in a step): within 2e-7 of the exact value.

    Example:
      >>> table = dynamic_map(signed=False)
      >>> table.shape, float(table[0]), float(table[-1]), float(table[1])
      ((256,), 0.0, 1.0, 3.25e-07)
    """
    return _entry(np.arange(256, dtype=np.int32), signed, np)


TABLES = {True: dynamic_map(True), False: dynamic_map(False)}


def _decade_table(signed: bool) -> np.ndarray:
    """Per decade e = 0..6 (rows), float32: the entry that follows its last one (the first of
    decade e - 1; 1 for e = 0), its offset, spacing, 1 / spacing and number of cells."""
    offset, spacing = _DECADES[signed]
    cells = (64 if signed else 128) / 2.0 ** np.arange(7)
    first = offset * spacing
    after = np.concatenate([[1.0], first[:-1]])
    return np.stack([after, offset, spacing, 1 / spacing, cells], axis=1).astype(np.float32)


_DECADE_TABLE = {signed: _decade_table(signed) for signed in (True, False)}


def map_bracket(y: jax.Array, signed: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""The map's entries around magnitudes `y` in [0, 1]: ``(rank, lo, hi)``, ``lo <= y < hi``.

    ``lo`` is the entry of rank `rank` among the map's entries >= 0 (0 has rank 0) and ``hi`` the
    next one; at 1, ``lo = hi = 1``. The decade :math:`e` of `y` is the number of decades whose
    first entry is above it (six compares); its entries are :math:`(o_e + c)\, s_e` for the cells
    :math:`c = 0, 1, \dots` (`dynamic_map`'s arithmetic), so :math:`c = \lfloor y / s_e - o_e
    \rfloor` up to float32 rounding, which one comparison with each computed neighbour corrects:
    the bracket is exactly the one a search over the sorted map finds, from a few dozen
    elementwise operations (no search, no table read).

    Example:
      >>> rank, lo, hi = map_bracket(jnp.array([0.0, 0.5, 1.0]), signed=True)
      >>> rank.tolist(), [f"{v:.4g}" for v in lo.tolist()], [f"{v:.4g}" for v in hi.tolist()]
      ([0, 91, 128], ['0', '0.4867', '1'], ['5.5e-07', '0.5008', '1'])
    """
    table = _DECADE_TABLE[signed]
    after, offset, spacing, inverse, cells = (jnp.float32(v) for v in table[0])
    for row in table[1:]:
        inside = y < row[0]  # below the first entry of the decade above this row's
        after, offset, spacing, inverse, cells = (
            jnp.where(inside, new, old)
            for new, old in zip(row, (after, offset, spacing, inverse, cells))
        )
    entry = lambda cell: (offset + cell) * spacing  # noqa: E731
    top = cells - 1
    cell = jnp.clip(jnp.floor(y * inverse - offset), 0, top)
    lo = entry(cell)
    hi = jnp.where(cell == top, after, entry(cell + 1))
    down = y < lo  # the guess is one cell too high (never in the decade's first cell)
    up = (y >= hi) & (cell < top)  # one cell too low (never in its last)
    next_hi = jnp.where(cell + 1 == top, after, entry(cell + 2))
    lo, hi = (
        jnp.where(down, entry(cell - 1), jnp.where(up, hi, lo)),
        jnp.where(down, lo, jnp.where(up, next_hi, hi)),
    )
    rank = (cells + cell - down + up).astype(jnp.int32) - (0 if signed else 1)
    smallest = TABLES[signed][128 if signed else 1]  # below it, the bracket is (0, smallest)
    below, one = y < smallest, y >= 1
    rank = jnp.where(below, 0, rank + one)
    lo = jnp.where(below, jnp.float32(0), jnp.where(one, jnp.float32(1), lo))
    hi = jnp.where(below, smallest, hi)
    return rank, lo, hi


def encode_map(normalized: jax.Array, signed: bool, u: jax.Array | None = None) -> jax.Array:
    r"""Map indices (0..255) of values in [-1, 1]: the nearest entry, or with `u` a neighbour.

    Nearest: the entry whose midpoint with its neighbour the value passes (as ``searchsorted``
    over the midpoints; NaN counts as above them all). Stochastic (uniform draws `u` in [0, 1)):
    of the entries just below and above the value (`map_bracket`), the upper with probability
    proportional to the distance from the lower, so that the expected decoded value is the
    value. The signed map has no -1: a value below its lowest entry takes that entry.

    Example:
      >>> encode_map(jnp.array([-1.0, 0.0, 0.5, 1.0]), signed=True)
      Array([  0, 127, 219, 255], dtype=int32)
    """
    y = jnp.abs(normalized)
    rank, lo, hi = map_bracket(y, signed)
    negative = normalized < 0  # its bracket is (-hi, -lo): "up" is away from zero
    if u is None:
        middle = (lo + hi) / 2
        up = jnp.where(negative, y >= middle, middle < y)
    else:
        draw = u * (hi - lo)
        up = jnp.where(negative, ~(draw < hi - y), draw < y - lo)
    rank = rank + up.astype(jnp.int32)
    index = jnp.where(negative, 127 - rank, 127 + rank) if signed else rank
    return jnp.where(jnp.isnan(normalized), 255, jnp.clip(index, 0, 255))


# ---------------------------------------------------------------- blocks


def scales_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One scale per block of 256 along the last axis (a 0-d statistic is one block)."""
    rows = shape or (1,)
    return rows[:-1] + (math.ceil(rows[-1] / BLOCK_SIZE),)


def _whole_blocks_per_shard(rows: jax.Array) -> jax.Array:
    """`rows`, its last axis replicated if its shards do not hold whole blocks (explicit axes)."""
    sharding = explicit_sharding(rows)
    if sharding is None:
        return rows
    spec = tuple(sharding.spec) + (None,) * (rows.ndim - len(sharding.spec))
    names = spec[-1]
    if names is None or rows.shape[-1] % (BLOCK_SIZE * mesh_size(sharding, names)) == 0:
        return rows
    return jax.sharding.reshard(rows, jax.sharding.PartitionSpec(*spec[:-1], None))


def to_blocks(x: jax.Array) -> jax.Array:
    """`x` in float32 as ``(..., blocks, 256)`` along its last axis, zero-padded."""
    x = x.astype(jnp.float32)
    rows = _whole_blocks_per_shard(x.reshape(x.shape or (1,)))
    n = rows.shape[-1]
    num_blocks = math.ceil(n / BLOCK_SIZE)
    if num_blocks * BLOCK_SIZE != n:
        pad = [(0, 0)] * (rows.ndim - 1) + [(0, num_blocks * BLOCK_SIZE - n)]
        rows = jnp.pad(rows, pad)
    return rows.reshape(rows.shape[:-1] + (num_blocks, BLOCK_SIZE))


def from_blocks(blocks: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The inverse of `to_blocks`: the padding dropped, `shape` restored."""
    rows = shape or (1,)
    flat = blocks.reshape(blocks.shape[:-2] + (blocks.shape[-2] * BLOCK_SIZE,))
    if flat.shape[-1] != rows[-1]:
        flat = flat[..., : rows[-1]]
    return flat.reshape(shape)


def scale_blocks(values: jax.Array, scales: jax.Array) -> jax.Array:
    """`values` (the statistic's shape) times the scale of each one's block."""
    blocks = to_blocks(values)
    return from_blocks(blocks * scales[..., None], values.shape)


# ---------------------------------------------------------------- 8-bit dynamic map


class QuantizedArray(NamedTuple):
    """A statistic quantized blockwise: 8-bit codes and one float32 scale per block of 256.

    Attributes:
      codes: the parameter's shape; int8 indexes the signed dynamic map (``code + 128``), uint8 the
        unsigned one, a float8 dtype holds the block-scaled values (`Float8Blockwise`). A leaf
        kept whole (smaller than the storage's ``min_size``) holds its float32 values here, and a
        (1,) placeholder in ``scales``.
      scales: float32, ``shape[:-1] + (ceil(shape[-1] / 256),)``: each block's absolute maximum.
        Blocks run along the last axis, so the codes shard exactly like the parameter, and a
        table's row (axis 0) holds its own blocks: a row's codes and scales are gathered and
        scattered together.

    Example:
      >>> stored = quantize_blockwise(jnp.array([0.5, -1.0, 0.25]), signed=True)
      >>> stored.codes, stored.scales
      (Array([  91, -128,   73], dtype=int8), Array([1.], dtype=float32))
      >>> stored.widen()  # the signed map has no -1
      Array([ 0.50078124, -0.9929688 ,  0.24765624], dtype=float32)
    """

    codes: jax.Array
    scales: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codes.shape

    def widen(self) -> jax.Array:
        """The float32 statistic: ``map[code] * scale`` of its block (FP8: ``value * scale``)."""
        if self.codes.dtype == jnp.float32:
            return self.codes
        return _widen(self.codes, self.scales)


# The encoders and the decoder are traced once per shape and reused (a jitted function caches its
# trace): a step with many leaves of one shape, or a program that encodes each statistic of a
# leaf, traces the few hundred operations of the 8-bit map once, not once per use.
@jax.jit
def _widen(codes: jax.Array, scales: jax.Array) -> jax.Array:
    if jnp.issubdtype(codes.dtype, jnp.floating):  # float8: values in units of scale / max
        values = codes.astype(jnp.float32) * np.float32(1 / float(jnp.finfo(codes.dtype).max))
    else:
        signed = codes.dtype == jnp.int8
        values = _entry(codes.astype(jnp.int32) + (128 if signed else 0), signed, jnp)
    return scale_blocks(values, scales)


def quantize_blockwise(x: jax.Array, signed: bool, key: jax.Array | None = None) -> QuantizedArray:
    r"""Quantize `x` in blocks of 256 along its last axis to the dynamic map (Dettmers et al.).

    .. math::

       s_b = \max_{i \in b} |x_i|, \qquad c_i = \arg\min_c |\mathrm{map}[c] - x_i / s_b|

    (nearest, as bitsandbytes); with a `key`, :math:`c_i` is instead the code just below or just
    above :math:`x_i / s_b`, the upper one with probability proportional to the distance from the
    lower one, so that :math:`\mathbb{E}[\mathrm{map}[c_i]\, s_b] = x_i` (`random_bits`). With the
    unsigned map a positive value never gets the code of 0 (it takes the smallest positive one): a
    second moment decoded as 0 under a non-zero first moment would make a step of
    :math:`m / \epsilon` (the "zero-point problem" of Li, Chen & Zhu, "Memory Efficient Optimizers
    with 4-bit States", 2023, https://arxiv.org/abs/2309.01507). The code is computed from the
    map's closed form (`map_bracket`): exactly the nearest (or bracketing) entry.

    Example:
      >>> q = quantize_blockwise(jnp.array([[0.5, -2.0, 0.001]]), signed=True)
      >>> q.scales, [round(v, 4) for v in q.widen()[0].tolist()]  # the signed map's ends: 1, -0.993
      (Array([[2.]], dtype=float32), [0.4953, -1.9859, 0.001])
    """
    return _quantize_map(x, signed, key)


@functools.partial(jax.jit, static_argnums=1)
def _quantize_map(x: jax.Array, signed: bool, key: jax.Array | None) -> QuantizedArray:
    blocks = to_blocks(x)
    scales = jnp.max(jnp.abs(blocks), axis=-1)
    normalized = blocks / jnp.where(scales > 0, scales, 1.0)[..., None]
    u = None if key is None else uniform(key, normalized.shape, like=normalized)
    index = encode_map(normalized, signed, u)
    if not signed:  # a positive second moment never decodes to 0 (the zero-point problem)
        index = jnp.where(normalized > 0, jnp.maximum(index, 1), index)
    index = from_blocks(index, jnp.shape(x))
    codes = (index - 128).astype(jnp.int8) if signed else index.astype(jnp.uint8)
    return QuantizedArray(codes, scales.reshape(scales_shape(jnp.shape(x))))



def _check_real(where: str, param: jax.Array) -> None:
    if jnp.iscomplexobj(param):
        raise TypeError(
            f"{where} stores real statistics; got a complex parameter of shape {param.shape} "
            "(use a float dtype for complex parameters)"
        )


def _row_conflict(stored: QuantizedArray) -> str | None:
    """Why a leaf's rows cannot be updated alone: blocks of a quantized 1-d leaf span rows."""
    if stored.codes.dtype == jnp.float32 or stored.codes.ndim >= 2:
        return None
    return f"keeps one scale per {BLOCK_SIZE} consecutive entries of this 1-d leaf"


class Int8Blockwise(NamedTuple):
    """Keep a statistic as 8-bit blockwise dynamic quantization (spec ``"int8_blockwise"``).

    Each block of 256 coordinates along the last axis keeps its absolute maximum in float32 and
    each coordinate an 8-bit index into Dettmers' dynamic map (`dynamic_map`): ~1.016 bytes per
    coordinate instead of 4. Leaves with fewer than ``min_size`` coordinates stay float32 (as
    bitsandbytes' ``min_8bit_size``): their state is small and they are often the most sensitive
    (biases, norms).

    Rounding is stochastic by default (`quantize_blockwise`), unlike bitsandbytes' nearest
    rounding: an EMA step of a second moment (0.1% for β2 = 0.999) is far below the map's spacing
    (0.7% near the block maximum, 7% a decade below it), so with nearest rounding a statistic
    cannot move on its own and follows its block's maximum; on the digits MLP of
    ``examples/low_precision.py`` that biases the final loss by 4 to 12%, against 0.2% with
    stochastic rounding (``docs/low_precision.md``). ``stochastic=False`` gives bitsandbytes'
    behaviour.

    Reference: Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise
    Quantization", ICLR 2022, https://arxiv.org/abs/2110.02861

    Attributes:
      min_size: leaves with fewer coordinates are kept in float32.
      signed: the signed map (first moments) or the unsigned one (non-negative statistics: second
        moments, accumulators); None lets the transformation choose per statistic.
      stochastic: round to a neighbouring code with probabilities given by the distance (the
        engine's key, deterministic per step and leaf), instead of to the nearest code.

    Example:
      >>> storage = Int8Blockwise(min_size=0, signed=False)
      >>> stored = storage.init(jnp.zeros((2, 300)), 0.0)
      >>> stored.codes.dtype, stored.codes.shape, stored.scales.shape
      (dtype('uint8'), (2, 300), (2, 2))
    """

    min_size: int = 4096
    signed: bool | None = None
    stochastic: bool = True
    reads_stored = False
    container = QuantizedArray

    def init(self, param: jax.Array, value: ArrayLike) -> QuantizedArray:
        _check_real("Int8Blockwise", param)
        if math.prod(param.shape) < self.min_size:
            return QuantizedArray(full_like(param, value, jnp.float32), placeholder())
        # Every block of a constant array holds the same code and scale: those of one value.
        one = quantize_blockwise(jnp.full((1,), value, jnp.float32), self.signed is not False)
        code, scale = one.codes[0], one.scales[0]
        return QuantizedArray(
            full_like(param, code, code.dtype),
            full_like(param, scale, jnp.float32, scales_shape(param.shape)),
        )

    def row_conflict(self, stored: QuantizedArray) -> str | None:
        """Why a leaf's rows cannot be updated alone: blocks of a quantized 1-d leaf span rows."""
        return _row_conflict(stored)

    def encode(
        self, x: jax.Array, previous: QuantizedArray, key: jax.Array | None
    ) -> QuantizedArray:
        if previous.codes.dtype == jnp.float32:
            kept = keep_layout(x.astype(jnp.float32), previous.codes)
            return QuantizedArray(kept, previous.scales)
        key = key if self.stochastic else None
        stored = quantize_blockwise(x, signed=previous.codes.dtype == jnp.int8, key=key)
        return QuantizedArray(*map(keep_layout, stored, previous))


# ---------------------------------------------------------------- FP8 with per-block scales

FLOAT8_DTYPES = ("float8_e4m3fn", "float8_e5m2")


def round_stochastic_float(v: jax.Array, dtype, u_bits: jax.Array) -> jax.Array:
    r"""Round float32 `v` (within `dtype`'s range) to a neighbour of `dtype`'s grid, unbiased.

    A float with :math:`m` mantissa bits keeps :math:`m` of float32's 23 (fewer below its
    smallest normal exponent): adding random bits to the dropped ones and clearing them rounds up
    with probability equal to the distance from the lower neighbour, so
    :math:`\mathbb{E}[\mathrm{round}(v)] = v`. Below the smallest subnormal :math:`\tau` the value
    becomes :math:`\tau` with probability :math:`|v| / \tau`, else 0. The result is exactly
    representable in `dtype` (the cast that follows is exact).

    Example:
      >>> v = jnp.full((10000,), 1.0 + 2.0**-5)  # a quarter of an e4m3 unit above 1
      >>> r = round_stochastic_float(v, jnp.float8_e4m3fn, random_bits(jax.random.key(0), v.shape))
      >>> sorted(set(r.tolist())), round(float(r.mean() - 1) * 2**5, 1)
      ([1.0, 1.125], 1.0)
    """
    info = jnp.finfo(dtype)
    mant, emin = int(info.nmant), int(info.minexp)
    bits = jax.lax.bitcast_convert_type(jnp.abs(v), jnp.uint32)
    exponent = (bits >> 23).astype(jnp.int32) - 127
    shift = jnp.clip(23 - mant + jnp.maximum(emin - exponent, 0), 0, 31).astype(jnp.uint32)
    mask = (jnp.uint32(1) << shift) - jnp.uint32(1)
    rounded = jax.lax.bitcast_convert_type((bits + (u_bits & mask)) & ~mask, jnp.float32)
    tiny = np.float32(2.0 ** (emin - mant))
    u = (u_bits >> 8).astype(jnp.float32) * np.float32(2.0**-24)
    small = jnp.where(u * tiny < jnp.abs(v), tiny, np.float32(0))
    out = jnp.where(jnp.abs(v) < tiny, small, rounded)
    return jnp.where(jnp.isnan(v), v, jnp.copysign(out, v))


def quantize_float8(
    x: jax.Array, dtype, signed: bool = True, key: jax.Array | None = None
) -> QuantizedArray:
    r"""`x` in blocks of 256 along its last axis, scaled to `dtype`'s range and cast.

    .. math::

       s_b = \max_{i \in b} |x_i|, \qquad c_i = \mathrm{fp8}(x_i\, F / s_b)

    with :math:`F` the largest finite value of `dtype` (448 for e4m3fn, 57344 for e5m2), rounded
    to nearest, or with a `key` stochastically (`round_stochastic_float`). Unsigned (a second
    moment), a positive value never becomes 0: it keeps at least the smallest subnormal.

    Example:
      >>> q = quantize_float8(jnp.array([0.5, -2.0, 0.001]), jnp.float8_e4m3fn)
      >>> q.codes.dtype, q.scales, q.widen().tolist()  # 0.001 * 448 / 2 = 0.224 -> 0.21875
      (dtype(float8_e4m3fn), Array([2.], dtype=float32), [0.5, -2.0, 0.0009765625])
    """
    return _quantize_float8(x, jnp.dtype(dtype), signed, key)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _quantize_float8(x: jax.Array, dtype, signed: bool, key: jax.Array | None) -> QuantizedArray:
    blocks = to_blocks(x)
    scales = jnp.max(jnp.abs(blocks), axis=-1)
    top = np.float32(jnp.finfo(dtype).max)
    v = blocks / jnp.where(scales > 0, scales, 1.0)[..., None] * top
    if key is not None:
        v = round_stochastic_float(v, dtype, random_bits(key, v.shape, like=v))
    if not signed:  # a positive second moment never decodes to 0 (the zero-point problem)
        tiny = np.float32(2.0 ** (int(jnp.finfo(dtype).minexp) - int(jnp.finfo(dtype).nmant)))
        v = jnp.where(v > 0, jnp.maximum(v, tiny), v)
    codes = from_blocks(v.astype(dtype), jnp.shape(x))
    return QuantizedArray(codes, scales.reshape(scales_shape(jnp.shape(x))))


class Float8Blockwise(NamedTuple):
    """Keep a statistic in FP8 with one float32 scale per block of 256 (specs
    ``"float8_e4m3fn_blockwise"``, ``"float8_e5m2_blockwise"``).

    Each block of 256 coordinates along the last axis keeps its absolute maximum in float32 and
    each coordinate its value times ``max(dtype) / absmax`` cast to `dtype` (`quantize_float8`):
    ~1.016 bytes per coordinate, as `Int8Blockwise`, with a cast for an encoder. e4m3fn keeps 3
    mantissa bits over 2^-9 .. 448 (15 binades); e5m2 keeps 2 over 2^-16 .. 57344 (31 binades).
    Leaves smaller than ``min_size`` stay float32; rows map to blocks as for `Int8Blockwise`.
    Rounding is stochastic by default, for the reason `Int8Blockwise` gives (an EMA step below the
    grid's spacing would otherwise be lost).

    References: Peng et al., "FP8-LM: Training FP8 Large Language Models", 2023,
    https://arxiv.org/abs/2310.18313 ; Micikevicius et al., "FP8 Formats for Deep Learning", 2022,
    https://arxiv.org/abs/2209.05433

    Attributes:
      dtype: ``"float8_e4m3fn"`` or ``"float8_e5m2"``.
      min_size: leaves with fewer coordinates are kept in float32.
      signed: whether the statistic can be negative (None: the transformation says; a second
        moment is not, and keeps positive values above 0).
      stochastic: stochastic rounding (the engine's key) instead of round to nearest.

    Example:
      >>> storage = Float8Blockwise("float8_e4m3fn", min_size=0)
      >>> stored = storage.init(jnp.zeros((2, 300)), 0.5)
      >>> stored.codes.dtype, stored.scales.shape, stored.widen()[0, :2]
      (dtype(float8_e4m3fn), (2, 2), Array([0.5, 0.5], dtype=float32))
    """

    dtype: str = "float8_e4m3fn"
    min_size: int = 4096
    signed: bool | None = None
    stochastic: bool = True
    reads_stored = False
    container = QuantizedArray

    def _checked_dtype(self):
        if str(self.dtype) not in FLOAT8_DTYPES:
            raise ValueError(
                f"Float8Blockwise: dtype must be one of {FLOAT8_DTYPES}, got dtype={self.dtype!r} "
                "(for another float dtype, pass the dtype itself as mu_dtype / nu_dtype)"
            )
        return jnp.dtype(str(self.dtype))

    def init(self, param: jax.Array, value: ArrayLike) -> QuantizedArray:
        _check_real("Float8Blockwise", param)
        dtype = self._checked_dtype()
        if math.prod(param.shape) < self.min_size:
            return QuantizedArray(full_like(param, value, jnp.float32), placeholder())
        one = quantize_float8(jnp.full((1,), value, jnp.float32), dtype, self.signed is not False)
        code, scale = one.codes[0], one.scales[0]
        return QuantizedArray(
            full_like(param, code, dtype),
            full_like(param, scale, jnp.float32, scales_shape(param.shape)),
        )

    def row_conflict(self, stored: QuantizedArray) -> str | None:
        """Why a leaf's rows cannot be updated alone: blocks of a quantized 1-d leaf span rows."""
        return _row_conflict(stored)

    def encode(
        self, x: jax.Array, previous: QuantizedArray, key: jax.Array | None
    ) -> QuantizedArray:
        if previous.codes.dtype == jnp.float32:
            kept = keep_layout(x.astype(jnp.float32), previous.codes)
            return QuantizedArray(kept, previous.scales)
        key = key if self.stochastic else None
        stored = quantize_float8(x, previous.codes.dtype, self.signed is not False, key)
        return QuantizedArray(*map(keep_layout, stored, previous))
