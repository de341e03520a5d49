r"""Lean storage of a rule's statistics: the rule computes in float32, the state keeps less.

A *storage* says how one statistic of a rule (a moment, an accumulator) is kept between steps. The
rule engine (`adaptive_tx.rule`) is the one place that touches it: ``storage.init`` builds the
initial statistic, `decode` widens a stored statistic to the float32 array the rule computes with,
and ``storage.encode`` turns the rule's new float32 statistic into what the state keeps. The rule's
arithmetic is never copied: every storage runs the same rule.

Storages, as accepted by ``mu_dtype`` / ``nu_dtype`` of every moment-based transformation:

==========================  ==============================================  ==================
spec                        stored as                                       bytes / coordinate
==========================  ==============================================  ==================
``None`` / a float dtype    that dtype, rounded to nearest (`Cast`)         4, 2 (bf16, f16)
``"bfloat16_sr"``           bfloat16, stochastic rounding                   2
                            (`StochasticRounding`)
``"int8_blockwise"``        8-bit dynamic codes + a float32 absmax per      ~1.016
                            block of 256 (`Int8Blockwise`)
``adaptive_tx.Factored()``  Adafactor's row and column means                O(m + n) per matrix
``adaptive_tx.BlockMean``   one mean per block (Adam-mini)                  one number per block
==========================  ==============================================  ==================

Rounding storages (`Cast`, `StochasticRounding`, `Int8Blockwise`) leave the step itself in float32:
the update is computed from the new float32 statistics and only the state is rounded (as optax's
``mu_dtype``). Estimating storages (`Factored`, `BlockMean`) *are* the estimate: the step reads the
statistic as stored.

References: Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise Quantization",
ICLR 2022, https://arxiv.org/abs/2110.02861 ; Gupta, Agrawal, Gopalakrishnan & Narayanan, "Deep
Learning with Limited Numerical Precision", ICML 2015, https://arxiv.org/abs/1502.02551 (stochastic
rounding) ; Zamirai, Zhang, Aberger & De Sa, "Revisiting BFloat16 Training", 2020,
https://arxiv.org/abs/2010.06192
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from adaptive_tx import _layout, _validate
from adaptive_tx._layout import (
    PLACEHOLDER_SHAPE,
    explicit_sharding,
    full_like,
    keep_layout,
    lookup,
    mesh_size,
    placeholder,
)

BLOCK_SIZE = _layout.BLOCK_SIZE
"""Coordinates per quantization block (Dettmers et al. 2022), along a statistic's last axis."""

SR_BFLOAT16 = "bfloat16_sr"
INT8_BLOCKWISE = "int8_blockwise"


def dynamic_map(signed: bool) -> np.ndarray:
    r"""The 256 values of the dynamic quantization map of Dettmers et al. (2022), sorted.

    For each exponent :math:`e = 0, \dots, 6` the map holds the midpoints of a linear grid on
    :math:`[0.1, 1]` times :math:`10^{-e}`: :math:`2^{6-e}` of them per sign (signed map, for first
    moments) or :math:`2^{7-e}` (unsigned map, for second moments); plus 0 and 1. Small magnitudes
    keep a few significant digits, so the map spans seven orders of magnitude below the block's
    absolute maximum.

    Example:
      >>> table = dynamic_map(signed=False)
      >>> table.shape, float(table[0]), float(table[-1]), float(table[1])
      ((256,), 0.0, 1.0, 3.25e-07)
    """
    values = [0.0, 1.0]
    for e in range(7):
        count = 2 ** (6 - e) if signed else 2 ** (7 - e)
        boundaries = np.linspace(0.1, 1.0, count + 1)
        means = 10.0**-e * (boundaries[:-1] + boundaries[1:]) / 2
        values += list(means) + (list(-means) if signed else [])
    return np.sort(np.asarray(values, np.float32))


_TABLES = {True: dynamic_map(True), False: dynamic_map(False)}
# code -> value is a table lookup; value -> code a search among the midpoints (nearest value).
_MIDPOINTS = {signed: (t[1:] + t[:-1]) / 2 for signed, t in _TABLES.items()}


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The dtype a rule computes in: float32 for lower precisions, else the dtype itself.

    Example:
      >>> compute_dtype(jnp.bfloat16)
      dtype('float32')
    """
    return jnp.promote_types(dtype, jnp.float32)


def is_stored(x: Any) -> bool:
    """Whether `x` is a statistic kept in a container (8-bit codes and scales, factored means).

    In a state, a container holds one params-shaped tree per field (``state.nu.codes``,
    ``state.nu.scales``), so that every params-shaped tree has arrays at its leaves (as optax's
    states do; `flax.nnx.Optimizer` and ``optax.tree_map_params`` rely on it). `split` gives one
    container per parameter, `join` puts them back.

    Example:
      >>> is_stored(jnp.zeros(3)), is_stored(Int8Blockwise(min_size=0).init(jnp.zeros(3), 0.0))
      (False, True)
    """
    return isinstance(x, tuple) and hasattr(x, "widen")


def split(stat: Any, treedef: Any) -> list[Any]:
    """A statistic as kept in a state, one stored value (array or container) per parameter leaf.

    Example:
      >>> params = {'a': jnp.zeros(2), 'b': jnp.zeros(3)}
      >>> treedef = jax.tree.structure(params)
      >>> stat = join([Cast().init(p, 1.0) for p in jax.tree.leaves(params)], treedef, None)
      >>> [x.shape for x in split(stat, treedef)]
      [(2,), (3,)]
    """
    if not is_stored(stat):
        return treedef.flatten_up_to(stat)
    fields = [treedef.flatten_up_to(tree) for tree in stat]
    return [type(stat)(*parts) for parts in zip(*fields)]


def join(leaves: list[Any], treedef: Any, container: type | None) -> Any:
    """The inverse of `split`: a container of params-shaped trees (or one tree of arrays).

    Example:
      >>> treedef = jax.tree.structure({'a': 0, 'b': 0})
      >>> stored = [QuantizedArray(jnp.zeros(2), placeholder()) for _ in range(2)]
      >>> jax.tree.map(jnp.shape, join(stored, treedef, QuantizedArray).codes)
      {'a': (2,), 'b': (2,)}
    """
    if container is None:
        return treedef.unflatten(leaves)
    return container(
        *(treedef.unflatten([leaf[i] for leaf in leaves]) for i in range(len(container._fields)))
    )


def check_matches(
    where: str, updates: Any, stat: Any, per_block: bool, stat_shape: Any = None
) -> None:
    """Raises a readable ValueError when a stored statistic does not fit the gradient tree.

    Checks the structure of every params-shaped tree of `stat`, then the shape each parameter's
    statistic stands for (``container.shape``; with `per_block`, size 1 along averaged axes; with
    `stat_shape`, the statistic's own shape for the gradient's, e.g. one per row).
    """
    treedef = jax.tree.structure(updates)
    for tree in stat if is_stored(stat) else (stat,):
        try:  # a container's tree may hold a list per parameter (SM3's per-axis maxima)
            ok = is_stored(stat) and bool(treedef.flatten_up_to(tree))
        except (ValueError, TypeError):
            ok = False
        if not ok:
            _validate.check_tree_matches(where, updates, tree, shapes=False)
    shapes = [jax.ShapeDtypeStruct(leaf.shape, jnp.float32) for leaf in split(stat, treedef)]
    _validate.check_tree_matches(
        where, updates, treedef.unflatten(shapes), per_block=per_block, stat_shape=stat_shape
    )


def check_row_sparse(where: str, leaf: Any, storage: Any, stored: Any) -> None:
    """Raises a TypeError naming the storage if it cannot update `leaf`'s rows one by one.

    A row-sparse step gathers each array a storage keeps for the leaf at the touched rows (axis
    0), runs the rule on them and scatters them back. That is exact where every array has the
    leaf's rows along axis 0 (elementwise storages; 8-bit blocks, which run along the last axis
    of a table, so that a row holds its own blocks; per-row means) or is a placeholder the
    storage does not read. A storage's ``row_conflict(stored)`` says why it is not (a block
    spanning rows: 8-bit blocks of a 1-d leaf, factored column means, a mean over axis 0), or
    None; a storage without it is trusted if it does not estimate (``reads_stored``). A storage
    that is not a user's option (SM3's `adaptive_tx.CoverSet`) names its own fix, ``row_fix``.

    Example:
      >>> check_row_sparse("Adam", "['emb']", Int8Blockwise(min_size=0), Int8Blockwise(
      ...     min_size=0).init(jnp.zeros(4096), 0.0))
      Traceback (most recent call last):
      ...
      TypeError: Adam: row-sparse leaf ['emb'] cannot update factored or per-block statistics row by row: Int8Blockwise(min_size=0, signed=None, stochastic=True) keeps one scale per 256 consecutive entries of this 1-d leaf, so a step on some rows would rescale others; keep this leaf's statistic elementwise (a float dtype, 'bfloat16_sr', or Int8Blockwise(min_size=...) above the leaf's size, e.g. with optax.multi_transform) or make its gradient dense (prepare_rows(lazy=False))
    """
    conflict = getattr(storage, "row_conflict", None)
    if conflict is not None:
        reason = conflict(stored)
    else:
        reason = "estimates its statistic over blocks" if storage.reads_stored else None
    fix = getattr(storage, "row_fix", None) or (
        "keep this leaf's statistic elementwise (a float dtype, 'bfloat16_sr', or "
        "Int8Blockwise(min_size=...) above the leaf's size, e.g. with optax.multi_transform) "
        "or make its gradient dense (prepare_rows(lazy=False))"
    )
    if reason:
        raise TypeError(
            f"{where}: row-sparse leaf {leaf} cannot update factored or per-block statistics "
            f"row by row: {storage} {reason}, so a step on some rows would rescale others; {fix}"
        )


def decode(stored: Any) -> jax.Array:
    """A stored statistic as the rule sees it: a float32 (or wider) array.

    Example:
      >>> decode(jnp.ones(2, jnp.bfloat16)).dtype
      dtype('float32')
    """
    if is_stored(stored):
        return stored.widen()
    return stored.astype(compute_dtype(stored.dtype))


class Storage(Protocol):
    """What a storage object provides: the methods and attributes of `Cast` (see there).

    `Cast`, `StochasticRounding`, `Int8Blockwise`, `adaptive_tx.Factored` and
    `adaptive_tx.BlockMean` are storages; any object with these four members is one too.

    Example:
      >>> spec = "bfloat16_sr"  # a StorageSpec
      >>> kept = storage(spec)  # its Storage
      >>> kept, kept.reads_stored, kept.init(jnp.zeros(2), 0.5)
      (StochasticRounding(seed=0), False, Array([0.5, 0.5], dtype=bfloat16))
    """

    reads_stored: bool
    container: type | None

    def init(self, param: jax.Array, value: ArrayLike) -> Any: ...

    def encode(self, x: jax.Array, previous: Any, key: jax.Array | None) -> Any: ...


StorageSpec = Union[None, DTypeLike, str, Storage]
"""The type of the ``mu_dtype`` / ``nu_dtype`` arguments, as `storage` reads them.

None (the parameter's dtype), a float dtype, ``"bfloat16_sr"``, ``"int8_blockwise"`` or a
`Storage` object."""


def _check_real(where: str, param: jax.Array) -> None:
    if jnp.iscomplexobj(param):
        raise TypeError(
            f"{where} stores real statistics; got a complex parameter of shape {param.shape} "
            "(use a float dtype for complex parameters)"
        )


class Cast(NamedTuple):
    """Keep a statistic in a float dtype, rounded to nearest (None: the parameter's dtype).

    A storage has ``init(param, value)`` (the statistic before the first step), ``encode(x,
    previous, key)`` (the new float32 statistic as kept; `key` for random rounding, or None),
    ``reads_stored`` (whether the step reads the statistic as kept, for estimating storages) and
    ``container`` (the `NamedTuple` it keeps per parameter, or None for a plain array).

    Example:
      >>> stored = Cast(jnp.bfloat16).init(jnp.zeros(2), 0.1)
      >>> stored.dtype, Cast().encode(jnp.array([1/3, 2/3]), stored, None)
      (dtype(bfloat16), Array([0.333984, 0.667969], dtype=bfloat16))
    """

    dtype: DTypeLike | None = None
    reads_stored = False
    container = None

    def init(self, param: jax.Array, value: ArrayLike) -> jax.Array:
        return full_like(param, value, self.dtype)

    def encode(self, x: jax.Array, previous: jax.Array, key: jax.Array | None) -> jax.Array:
        del key
        return keep_layout(x.astype(previous.dtype), previous)


def round_stochastic_bfloat16(x: jax.Array, key: jax.Array) -> jax.Array:
    r"""Round float32 `x` to bfloat16 up or down with probabilities given by the distance.

    bfloat16 is float32 with the low 16 bits dropped: adding 16 random bits to those before dropping
    them rounds :math:`x` to a neighbour with :math:`\mathbb{E}[\mathrm{round}(x)] = x`, so updates
    smaller than half a bfloat16 unit survive on average instead of vanishing.

    Example:
      >>> x = jnp.full((10000,), 1.0 + 2.0**-10)  # a quarter of a bfloat16 unit above 1
      >>> rounded = round_stochastic_bfloat16(x, jax.random.key(0)).astype(jnp.float32)
      >>> sorted(set(rounded.tolist())), round(float(rounded.mean() - 1) * 2**10, 2)
      ([1.0, 1.0078125], 1.01)
    """
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    noise = jax.random.bits(key, x.shape, jnp.uint32) >> 16
    rounded = (bits + noise) & jnp.uint32(0xFFFF0000)
    return jax.lax.bitcast_convert_type(rounded, jnp.float32).astype(jnp.bfloat16)


class StochasticRounding(NamedTuple):
    """Keep a statistic in bfloat16 with stochastic rounding (spec ``"bfloat16_sr"``).

    The random bits are deterministic: derived from ``seed``, the step count, the leaf and the
    statistic (the engine's key), so a run is reproducible and equal on any device layout. The
    initial value is rounded to nearest.

    References: Gupta, Agrawal, Gopalakrishnan & Narayanan, "Deep Learning with Limited Numerical
    Precision", ICML 2015, https://arxiv.org/abs/1502.02551 ; Zamirai, Zhang, Aberger & De Sa,
    "Revisiting BFloat16 Training", 2020, https://arxiv.org/abs/2010.06192

    Example:
      >>> storage = StochasticRounding()
      >>> stored = storage.init(jnp.zeros(3), 0.0)
      >>> storage.encode(jnp.array([1.0, 2.5, -3.0]), stored, jax.random.key(1))
      Array([1, 2.5, -3], dtype=bfloat16)
    """

    seed: int = 0
    reads_stored = False
    container = None

    def init(self, param: jax.Array, value: ArrayLike) -> jax.Array:
        _check_real("StochasticRounding", param)
        return full_like(param, value, jnp.bfloat16)

    def encode(self, x: jax.Array, previous: jax.Array, key: jax.Array | None) -> jax.Array:
        if key is None:
            return keep_layout(x.astype(jnp.bfloat16), previous)
        rounded = round_stochastic_bfloat16(x, jax.random.fold_in(key, self.seed))
        return keep_layout(rounded, previous)


class QuantizedArray(NamedTuple):
    """A statistic quantized blockwise: 8-bit codes and one float32 scale per block of 256.

    Attributes:
      codes: the parameter's shape; int8 indexes the signed dynamic map (``code + 128``), uint8 the
        unsigned one. A leaf kept whole (smaller than ``Int8Blockwise.min_size``) holds its
        float32 values here, and a (1,) placeholder in ``scales``.
      scales: float32, ``shape[:-1] + (ceil(shape[-1] / 256),)``: each block's absolute maximum.
        Blocks run along the last axis, so the codes shard exactly like the parameter, and a
        table's row (axis 0) holds its own blocks: a row's codes and scales are gathered and
        scattered together.

    Example:
      >>> stored = quantize_blockwise(jnp.array([0.5, -1.0, 0.25]), signed=True)
      >>> stored.codes, stored.scales
      (Array([  91, -128,   73], dtype=int8), Array([1.], dtype=float32))
      >>> stored.widen()  # the signed map has no -1
      Array([ 0.50078, -0.99297,  0.24766], dtype=float32)
    """

    codes: jax.Array
    scales: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codes.shape

    def widen(self) -> jax.Array:
        """The float32 statistic: ``map[code] * scale`` of its block."""
        if jnp.issubdtype(self.codes.dtype, jnp.floating):
            return self.codes.astype(jnp.float32)
        signed = self.codes.dtype == jnp.int8
        index = self.codes.astype(jnp.int32) + (128 if signed else 0)
        values = lookup(_TABLES[signed], index)
        rows = values.reshape(values.shape or (1,))
        blocks = self.scales.shape + (BLOCK_SIZE,)
        scale = jnp.broadcast_to(self.scales[..., None], blocks)
        scale = scale.reshape(blocks[:-2] + (blocks[-2] * BLOCK_SIZE,))
        scale = scale[..., : rows.shape[-1]]
        return (rows * keep_layout(scale, rows)).reshape(self.codes.shape)


def _scales_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One scale per block of 256 along the last axis (a 0-d statistic is one block)."""
    rows = shape or (1,)
    return rows[:-1] + (math.ceil(rows[-1] / BLOCK_SIZE),)


def count_below(table: np.ndarray, x: jax.Array) -> jax.Array:
    """How many entries of the sorted `table` are below each `x` (``jnp.searchsorted``, side left).

    A branch-free binary search: one gather from the small table per halving, elementwise in `x`,
    so it keeps `x`'s sharding (``jnp.searchsorted`` cannot run on arrays sharded over explicit
    mesh axes). NaN counts as above every entry, as in ``jnp.searchsorted``.

    Example:
      >>> count_below(np.array([0.0, 1.0, 2.0]), jnp.array([-1.0, 0.5, 1.0, 5.0, jnp.nan]))
      Array([0, 1, 1, 3, 3], dtype=int32)
    """
    size = table.shape[0]
    index = jnp.zeros_like(x, jnp.int32)
    step = 1 << (size.bit_length() - 1)
    while step:
        probe = jnp.minimum(index + step, size)
        index = jnp.where(lookup(table, probe - 1) < x, probe, index)
        step >>= 1
    return jnp.where(jnp.isnan(x), size, index)


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


def quantize_blockwise(x: jax.Array, signed: bool, key: jax.Array | None = None) -> QuantizedArray:
    r"""Quantize `x` in blocks of 256 along its last axis to the dynamic map (Dettmers et al.).

    .. math::

       s_b = \max_{i \in b} |x_i|, \qquad c_i = \arg\min_c |\mathrm{map}[c] - x_i / s_b|

    (nearest, as bitsandbytes); with a `key`, :math:`c_i` is instead the code just below or just
    above :math:`x_i / s_b`, the upper one with probability proportional to the distance from the
    lower one, so that :math:`\mathbb{E}[\mathrm{map}[c_i]\, s_b] = x_i`. With the unsigned map a
    positive value never gets the code of 0 (it takes the smallest positive one): a second moment
    decoded as 0 under a non-zero first moment would make a step of :math:`m / \epsilon` (the
    "zero-point problem" of Li, Chen & Zhu, "Memory Efficient Optimizers with 4-bit States", 2023,
    https://arxiv.org/abs/2309.01507).

    Example:
      >>> q = quantize_blockwise(jnp.array([[0.5, -2.0, 0.001]]), signed=True)
      >>> q.scales, [round(v, 4) for v in q.widen()[0].tolist()]  # the signed map's ends: 1, -0.993
      (Array([[2.]], dtype=float32), [0.4953, -1.9859, 0.001])
    """
    x = x.astype(jnp.float32)
    rows = x.reshape(x.shape or (1,))
    n = rows.shape[-1]
    num_blocks = math.ceil(n / BLOCK_SIZE)
    rows = _whole_blocks_per_shard(rows)
    pad = [(0, 0)] * (rows.ndim - 1) + [(0, num_blocks * BLOCK_SIZE - n)]
    blocks = jnp.pad(rows, pad).reshape(rows.shape[:-1] + (num_blocks, BLOCK_SIZE))
    scales = jnp.max(jnp.abs(blocks), axis=-1)
    normalized = blocks / jnp.where(scales > 0, scales, 1.0)[..., None]
    if key is None:
        index = count_below(_MIDPOINTS[signed], normalized)
    else:
        table = _TABLES[signed]
        upper = jnp.clip(count_below(table, normalized), 1, table.size - 1)
        low, high = lookup(table, upper - 1), lookup(table, upper)
        up = jax.random.uniform(key, normalized.shape) * (high - low) < normalized - low
        index = jnp.where(up, upper, upper - 1)
    if not signed:  # a positive second moment never decodes to 0 (the zero-point problem)
        index = jnp.where(normalized > 0, jnp.maximum(index, 1), index)
    index = index.reshape(rows.shape[:-1] + (num_blocks * BLOCK_SIZE,))[..., :n]
    codes = (index - 128).astype(jnp.int8) if signed else index.astype(jnp.uint8)
    return QuantizedArray(codes.reshape(x.shape), scales.reshape(_scales_shape(x.shape)))


_quantize_one = jax.jit(quantize_blockwise, static_argnums=1)  # one op in init, not thirty


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
        one = _quantize_one(jnp.full((1,), value, jnp.float32), self.signed is not False)
        code, scale = one.codes[0], one.scales[0]
        return QuantizedArray(
            full_like(param, code, code.dtype),
            full_like(param, scale, jnp.float32, _scales_shape(param.shape)),
        )

    def row_conflict(self, stored: QuantizedArray) -> str | None:
        """Why a leaf's rows cannot be updated alone: blocks of a quantized 1-d leaf span rows."""
        if jnp.issubdtype(stored.codes.dtype, jnp.floating) or stored.codes.ndim >= 2:
            return None
        return f"keeps one scale per {BLOCK_SIZE} consecutive entries of this 1-d leaf"

    def encode(
        self, x: jax.Array, previous: QuantizedArray, key: jax.Array | None
    ) -> QuantizedArray:
        if jnp.issubdtype(previous.codes.dtype, jnp.floating):
            kept = keep_layout(x.astype(jnp.float32), previous.codes)
            return QuantizedArray(kept, previous.scales)
        key = key if self.stochastic else None
        stored = quantize_blockwise(x, signed=previous.codes.dtype == jnp.int8, key=key)
        return QuantizedArray(*map(keep_layout, stored, previous))


def storage(spec: StorageSpec, name: str = "state dtype", *, nonnegative: bool = False) -> Storage:
    """The storage object for a ``mu_dtype`` / ``nu_dtype`` spec.

    Args:
      spec: None (the parameter's dtype), a float dtype, ``"bfloat16_sr"``, ``"int8_blockwise"``,
        or a storage object (`Cast`, `StochasticRounding`, `Int8Blockwise`, `Factored`, `BlockMean`
        or any object with ``init``, ``encode``, ``reads_stored`` and ``container``, see `Cast`).
      name: the argument's name, for the error message.
      nonnegative: the statistic is never negative (a second moment): 8-bit storage then uses the
        unsigned map, which has twice the resolution.

    Returns:
      A storage object.

    Example:
      >>> storage("int8_blockwise", nonnegative=True).signed, storage(jnp.bfloat16)
      (False, Cast(dtype=dtype(bfloat16)))
    """
    if isinstance(spec, str) and spec == SR_BFLOAT16:
        return StochasticRounding()
    if isinstance(spec, str) and spec == INT8_BLOCKWISE:
        spec = Int8Blockwise()
    if isinstance(spec, Int8Blockwise) and spec.signed is None:
        return spec._replace(signed=not nonnegative)
    if all(hasattr(spec, attr) for attr in ("init", "encode", "reads_stored", "container")):
        return spec
    return Cast(_validate.check_state_dtype(spec, name))


def moment_storages(mu_dtype: StorageSpec, nu_dtype: StorageSpec) -> tuple[Storage, Storage]:
    """The storages of a signed first moment and of a non-negative second moment.

    Example:
      >>> mu, nu = moment_storages("int8_blockwise", "int8_blockwise")
      >>> mu.signed, nu.signed
      (True, False)
    """
    return storage(mu_dtype, "mu_dtype"), storage(nu_dtype, "nu_dtype", nonnegative=True)


def state_nbytes(tree: chex.ArrayTree) -> int:
    """The bytes held by the arrays of a state (or any) tree, on all devices together.

    A sharded array counts each shard once; a replicated one counts every copy, so the figure is the
    memory the state really occupies. Python scalars and None hold no array and count 0.

    Example:
      >>> import adaptive_tx as atx
      >>> params = {'w': jnp.zeros((512, 512))}
      >>> state_nbytes(atx.scale_by_bias_corrected_moments().init(params)) // 512**2
      8
      >>> round(state_nbytes(atx.scale_by_bias_corrected_moments(
      ...     mu_dtype='int8_blockwise', nu_dtype='int8_blockwise').init(params)) / 512**2, 3)
      2.031
    """
    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
            total += sum(shard.data.nbytes for shard in leaf.addressable_shards)
        elif hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            total += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    return total
