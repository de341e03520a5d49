r"""Counter-based random bits for stochastic rounding: a few integer operations per coordinate.

`random_bits` hashes each coordinate's global index with two words of a key, so the bits are the
same on any device layout and cost two multiply-xorshift rounds (``jax.random.bits``, threefry,
runs twenty). The rule engine derives one key per step (`fold_in` of the step count) and one per
leaf (`leaf_keys`), which the storages (`adaptive_tx.state_precision.StochasticRounding`,
`adaptive_tx.quantized.Int8Blockwise`, `adaptive_tx.quantized.Float8Blockwise`) fold with the
statistic's index and their seed.

References: Widynski, "Squares: A Fast Counter-Based RNG", 2020, https://arxiv.org/abs/2004.06278 ;
Wellons, "Prospecting for Hash Functions", 2018, https://nullprogram.com/blog/2018/07/31/
(the ``lowbias32`` finalizer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from adaptive_tx._layout import explicit_sharding


def _mix(h: jax.Array) -> jax.Array:
    """A 32-bit finalizer (two multiply-xorshift rounds): every output bit depends on every input
    bit (Wellons' ``lowbias32``)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def key_words(key: jax.Array, salt: int = 0) -> tuple[jax.Array, jax.Array]:
    """Two uint32 scalars from a PRNG key (its raw data, no extra threefry) and a static `salt`."""
    data = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    first = data[0] ^ jnp.uint32((salt * 0x9E3779B9) & 0xFFFFFFFF)
    return first, data[-1] if data.size > 1 else jnp.uint32(0x85EBCA6B)


def fold_in(key: jax.Array, data: int | jax.Array) -> jax.Array:
    """A new PRNG key from `key` and an integer (a step, a leaf, a statistic): a cheap hash.

    The engine derives each leaf's and statistic's key with this, not ``jax.random.fold_in``
    (a threefry hash, twenty rounds compiled per call, i.e. per leaf and statistic). Keys are only
    read by `random_bits`, which mixes them again.

    Example:
      >>> a, b = fold_in(jax.random.key(0), 1), fold_in(jax.random.key(0), 2)
      >>> bool((jax.random.key_data(a) != jax.random.key_data(b)).all())
      True
    """
    words = jax.random.key_data(key)
    spread = jnp.arange(words.shape[-1], dtype=jnp.uint32) * jnp.uint32(0x85EBCA6B)
    salt = jnp.asarray(data).astype(jnp.uint32) * jnp.uint32(0x9E3779B9) + spread
    return jax.random.wrap_key_data(_mix(words ^ salt), impl=jax.random.key_impl(key))


def leaf_keys(key: jax.Array, num_leaves: int) -> list[jax.Array]:
    """``fold_in(key, i)`` for each leaf ``i < num_leaves``, with ``i`` a run-time value.

    A leaf's index is a compile-time constant: folded into the leaf's key inside the leaf's fused
    kernel, it makes every leaf's kernel different, so XLA compiles one kernel per leaf where
    float32 state compiles one per leaf shape. Here the indices come out of a `jax.lax.cond`
    whose predicate is a run-time value and whose two branches both return ``0, 1, ...``: XLA
    cannot fold them into the kernels that read them, so leaves of one shape and dtype share one
    kernel (the two scalar mixing rounds of `fold_in` run inside it). The keys are those of
    `fold_in`, whichever branch runs.

    Args:
      key: a PRNG key (the step's).
      num_leaves: how many keys.

    Returns:
      A list of `num_leaves` PRNG keys.

    Example:
      >>> keys = leaf_keys(jax.random.key(0), 3)
      >>> [bool((jax.random.key_data(k) == jax.random.key_data(fold_in(jax.random.key(0), i)))
      ...       .all()) for i, k in enumerate(keys)]
      [True, True, True]
    """
    if num_leaves == 0:
        return []
    words = jax.random.key_data(key).reshape(-1)

    def indices(_):
        return [jnp.uint32(i) for i in range(num_leaves)]

    index = jax.lax.cond(words[0] != words[-1], indices, indices, words)
    return [fold_in(key, i) for i in index]


def coordinate_index(shape: tuple[int, ...], like: jax.Array | None = None) -> jax.Array:
    """Each coordinate's row-major index in an array of `shape`, as uint32 (modulo 2^32).

    Built from iotas over the global shape, so it is the same however the array is sharded.
    """
    sharding = None if like is None else explicit_sharding(like)
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(len(shape))):
        iota = jax.lax.broadcasted_iota(jnp.uint32, shape, dim, out_sharding=sharding)
        index = index + iota * jnp.uint32(stride & 0xFFFFFFFF)
        stride *= shape[dim]
    return index


def random_bits(key: jax.Array, shape: tuple[int, ...], salt: int = 0, like=None) -> jax.Array:
    r"""32 pseudo-random bits per coordinate: a counter-based hash of (coordinate, key, salt).

    .. math::

       b_i = \mathrm{mix}\big(((i + k_0) \cdot \phi) \oplus k_1\big)

    with :math:`i` the coordinate's global row-major index, :math:`(k_0, k_1)` two words mixed
    from the key (which the engine derives from the step, the leaf and the statistic) and the
    `salt`, :math:`\phi` the golden-ratio constant, and `mix` a multiply-xorshift finalizer. A few
    integer operations per coordinate (threefry, ``jax.random.bits``, does 20 rounds), the same
    bits on any device layout, and decorrelated per coordinate and per key: a Weyl sequence of
    the coordinates, offset by one key word and XORed with the other, through a full 32-bit
    mixing. Two keys give shifted copies of one sequence only if their second words agree (a
    chance of 2^-32 for two keys of `fold_in`, which mixes both words). One mixing is what a
    rounding needs: bfloat16 stochastic rounding with it costs ~0.1-0.2x of a float32 Adam step
    where a second mixing cost ~0.4x (the hash is all of its overhead on a CPU).

    Args:
      key: a PRNG key.
      shape: the shape of the bits.
      salt: a static integer mixed in (a storage's ``seed``).
      like: an array whose explicit sharding the bits take (or None).

    Returns:
      A uint32 array of `shape`.

    Example:
      >>> bits = random_bits(jax.random.key(0), (100000,))
      >>> bits.dtype, round(float((bits >> 31).mean()), 2)
      (dtype('uint32'), 0.5)
    """
    first, second = key_words(key, salt)
    h = (coordinate_index(shape, like) + first) * jnp.uint32(0x9E3779B9)
    return _mix(h ^ second)


def uniform(key: jax.Array, shape: tuple[int, ...], salt: int = 0, like=None) -> jax.Array:
    """Uniform float32 draws in [0, 1) from the top 24 bits of `random_bits`."""
    bits = random_bits(key, shape, salt, like)
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
