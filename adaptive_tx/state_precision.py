r"""Lean storage of a rule's statistics: the rule computes in float32, the state keeps less.

A *storage* says how one statistic of a rule (a moment, an accumulator) is kept between steps. The
rule engine (`adaptive_tx.rule`) is the one place that touches it: ``storage.init`` builds the
initial statistic, `decode` widens a stored statistic to the float32 array the rule computes with,
and ``storage.encode`` turns the rule's new float32 statistic into what the state keeps. The rule's
arithmetic is never copied: every storage runs the same rule.

Storages, as accepted by ``mu_dtype`` / ``nu_dtype`` of every moment-based transformation:

=============================  ==========================================  ==================
spec                           stored as                                   bytes / coordinate
=============================  ==========================================  ==================
``None`` / a float dtype       that dtype, rounded to nearest (`Cast`)     4, 2 (bf16, f16)
``"bfloat16_sr"``              bfloat16, stochastic rounding               2
                               (`StochasticRounding`)
``"int8_blockwise"``           8-bit dynamic codes + a float32 absmax per  ~1.016
                               block of 256 (`Int8Blockwise`)
``"float8_e4m3fn_blockwise"``  FP8 values + a float32 absmax per block     ~1.016
``"float8_e5m2_blockwise"``    of 256 (`Float8Blockwise`)
``adaptive_tx.Factored()``     Adafactor's row and column means            O(m + n) per matrix
``adaptive_tx.BlockMean``      one mean per block (Adam-mini)              one number per block
=============================  ==========================================  ==================

Rounding storages (`Cast`, `StochasticRounding`, `Int8Blockwise`, `Float8Blockwise`) leave the
step itself in float32:
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
from adaptive_tx._layout import PLACEHOLDER_SHAPE, full_like, keep_layout, placeholder
from adaptive_tx.quantized import (
    FLOAT8_DTYPES,
    Float8Blockwise,
    Int8Blockwise,
    QuantizedArray,
    _check_real,
    dynamic_map,
    fold_in,
    quantize_blockwise,
    random_bits,
)

BLOCK_SIZE = _layout.BLOCK_SIZE
"""Coordinates per quantization block (Dettmers et al. 2022), along a statistic's last axis."""

SR_BFLOAT16 = "bfloat16_sr"
INT8_BLOCKWISE = "int8_blockwise"


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


def round_stochastic_bfloat16(x: jax.Array, key: jax.Array, salt: int = 0) -> jax.Array:
    r"""Round float32 `x` to bfloat16 up or down with probabilities given by the distance.

    bfloat16 is float32 with the low 16 bits dropped: adding 16 random bits to those before dropping
    them rounds :math:`x` to a neighbour with :math:`\mathbb{E}[\mathrm{round}(x)] = x`, so updates
    smaller than half a bfloat16 unit survive on average instead of vanishing. The bits are
    `adaptive_tx.counter_bits.random_bits` of (`key`, `salt`, each coordinate's index): a few integer
    operations per coordinate, the same on any device layout. NaN stays NaN.

    Example:
      >>> x = jnp.full((10000,), 1.0 + 2.0**-10)  # a quarter of a bfloat16 unit above 1
      >>> rounded = round_stochastic_bfloat16(x, jax.random.key(0)).astype(jnp.float32)
      >>> sorted(set(rounded.tolist())), round(float(rounded.mean() - 1) * 2**10, 1)
      ([1.0, 1.0078125], 1.0)
    """
    x = x.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    noise = random_bits(key, x.shape, salt, like=x) >> 16
    high = ((bits + noise) >> 16).astype(jnp.uint16)  # exact: the low 16 bits are dropped
    rounded = jax.lax.bitcast_convert_type(high, jnp.bfloat16)
    return jnp.where(jnp.isnan(x), x.astype(jnp.bfloat16), rounded)


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
        return keep_layout(round_stochastic_bfloat16(x, key, self.seed), previous)


def storage(spec: StorageSpec, name: str = "state dtype", *, nonnegative: bool = False) -> Storage:
    """The storage object for a ``mu_dtype`` / ``nu_dtype`` spec.

    Args:
      spec: None (the parameter's dtype), a float dtype, ``"bfloat16_sr"``, ``"int8_blockwise"``,
        ``"float8_e4m3fn_blockwise"``, ``"float8_e5m2_blockwise"``, or a storage object
        (`Cast`, `StochasticRounding`, `Int8Blockwise`, `Float8Blockwise`, `Factored`, `BlockMean`
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
    if isinstance(spec, str) and spec.removesuffix("_blockwise") in FLOAT8_DTYPES:
        spec = Float8Blockwise(spec.removesuffix("_blockwise"))
    if isinstance(spec, (Int8Blockwise, Float8Blockwise)) and spec.signed is None:
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
