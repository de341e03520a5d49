"""Float64 NumPy references for lean optimizer state, written from the papers.

Independent of optax and adaptive_tx:

- the dynamic quantization map built from its *bit layout* (Dettmers 2016, "8-Bit Approximations
  for Parallelism in Deep Learning", https://arxiv.org/abs/1511.04561, and Dettmers et al. 2022,
  "8-bit Optimizers via Block-wise Quantization", https://arxiv.org/abs/2110.02861, section 2):
  after the sign bit (signed map only) a run of E zero bits gives the exponent 10^-E, a 1 bit ends
  it, and the remaining bits index a linear grid on [0.1, 1] (the midpoints of its intervals); the
  all-zero code is 0 and the last free code is 1;
- blockwise quantization by brute force (the nearest map value to x / absmax of the block; with
  the unsigned map a positive value takes the nearest *positive* value, so that a second moment
  never decodes to 0: the zero-point problem of Li, Chen & Zhu 2023,
  https://arxiv.org/abs/2309.01507);
- Adam with a factored second moment (Shazeer & Stern 2018, https://arxiv.org/abs/1804.04235,
  Algorithm 4's factoring applied to Adam's v); Adafactor's scaling itself (Algorithm 4's row and
  column averages with the decay 1 - t^-c, without update clipping or relative step sizes), with
  the axes keras and torch factor and torch's floor on v; and Adam-mini (Zhang et al. 2024,
  https://arxiv.org/abs/2406.16793): one second moment per block, the mean of g^2 over the block.

Every ``run_<name>(params0, grads, lr, ...)`` returns the parameter after each step, as in
``numpy_optimizers``.
"""

import numpy as np

BLOCK = 256


def dynamic_map_from_bits(signed: bool) -> np.ndarray:
    """The 256 values of the dynamic map, enumerated from the 8-bit code layout."""
    magnitude_bits = 7 if signed else 8
    values = {0.0, 1.0}  # the all-zero code, and the one code left over (-0, or E = 7) means 1
    for exponent in range(7):  # E zeros, then the indicator bit
        fraction_bits = magnitude_bits - exponent - 1
        grid = np.linspace(0.1, 1.0, 2**fraction_bits + 1)
        for k in range(2**fraction_bits):
            value = 10.0**-exponent * (grid[k] + grid[k + 1]) / 2
            values.add(value)
            if signed:
                values.add(-value)
    table = np.array(sorted(values))
    assert table.size == 256
    return table


def quantize_blockwise(x: np.ndarray, table: np.ndarray):
    """(codes, scales): per block of 256 along the last axis, absmax and the nearest map index."""
    x = np.asarray(x, np.float64)
    rows = x.reshape(int(np.prod(x.shape[:-1])), x.shape[-1]) if x.ndim else x.reshape(1, 1)
    n = rows.shape[-1]
    codes = np.zeros(rows.shape, np.int64)
    scales = np.zeros((rows.shape[0], -(-n // BLOCK)))
    for r, row in enumerate(rows):
        for b in range(scales.shape[1]):
            block = row[b * BLOCK : (b + 1) * BLOCK]
            scale = np.max(np.abs(block))
            scales[r, b] = scale
            normalized = block / scale if scale > 0 else block
            distance = np.abs(normalized[:, None] - table[None, :])
            if table[0] == 0.0:  # unsigned map: a positive value is never coded as 0
                distance[normalized > 0, 0] = np.inf
            codes[r, b * BLOCK : (b + 1) * BLOCK] = np.argmin(distance, axis=1)
    return codes.reshape(x.shape), scales.reshape(x.shape[:-1] + scales.shape[-1:])


def dequantize_blockwise(codes: np.ndarray, scales: np.ndarray, table: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    rows = (
        codes.reshape(int(np.prod(codes.shape[:-1])), codes.shape[-1])
        if codes.ndim
        else codes.reshape(1, 1)
    )
    block_scale = np.repeat(
        np.asarray(scales).reshape(rows.shape[0], -(-rows.shape[1] // BLOCK)), BLOCK, axis=1
    )
    return (table[rows] * block_scale[:, : rows.shape[1]]).reshape(codes.shape)


def _adam_with_second_moment(params0, grads, lr, b1, b2, eps, second_moment):
    """Adam whose v_hat_t comes from `second_moment(t, g2)` (the caller keeps its own state)."""
    p = np.array(params0, np.float64)
    m = np.zeros_like(p)
    iterates = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        m = b1 * m + (1 - b1) * g
        v = second_moment(g * g) / (1 - b2**t)
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v) + eps)
        iterates.append(p.copy())
    return iterates


def run_adam_factored(params0, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Adam with v factored over a matrix's two axes (the larger is averaged into the rows).

    R_t = b2 R_{t-1} + (1 - b2) mean_over_largest_axis(g^2)
    C_t = b2 C_{t-1} + (1 - b2) mean_over_other_axis(g^2)
    v_t = R_t C_t / mean(R_t),   u_t = mhat_t / (sqrt(v_t / (1 - b2^t)) + eps)
    """
    largest = int(np.argmax(np.shape(params0)))
    other = 1 - largest
    state = {"R": 0.0, "C": 0.0}

    def second_moment(g2):
        state["R"] = b2 * state["R"] + (1 - b2) * g2.mean(axis=largest, keepdims=True)
        state["C"] = b2 * state["C"] + (1 - b2) * g2.mean(axis=other, keepdims=True)
        return state["R"] * state["C"] / state["R"].mean()

    return _adam_with_second_moment(params0, grads, lr, b1, b2, eps, second_moment)


def run_factored_rms(
    params0,
    grads,
    lr,
    decay_rate=0.8,
    epsilon=1e-30,
    min_dim_size_to_factor=128,
    last_two_axes=False,
):
    """Adafactor's scaling then -lr: Algorithm 4 of Shazeer & Stern with separate R and C.

    beta_t = 1 - t^-decay_rate (beta_1 = 0); for a factored leaf, with d1 the largest axis and d0
    the second largest (or d1 = -1, d0 = -2: keras, torch), if both have min_dim_size_to_factor
    entries,
      R_t = beta_t R_{t-1} + (1 - beta_t) mean_d1(g^2 + epsilon)
      C_t = beta_t C_{t-1} + (1 - beta_t) mean_d0(g^2 + epsilon)
      v_t = R_t C_t / mean_d0(R_t)      (0 where that mean is 0: no gradient yet)
    else v_t = beta_t v_{t-1} + (1 - beta_t)(g^2 + epsilon); u_t = g / sqrt(v_t).
    """
    p = np.array(params0, np.float64)
    shape = p.shape
    if p.ndim < 2:
        dims = None
    elif last_two_axes:
        dims = (p.ndim - 2, p.ndim - 1)
    else:
        dims = tuple(int(d) for d in np.argsort(shape, kind="stable")[-2:])
    if dims is not None and min(shape[d] for d in dims) < max(min_dim_size_to_factor, 1):
        dims = None
    R = C = v = 0.0
    iterates = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        beta = 1.0 - float(t) ** -decay_rate if decay_rate > 0 else 0.0
        g2 = g * g + epsilon
        if dims is None:
            v = beta * v + (1 - beta) * g2
        else:
            d0, d1 = dims
            R = beta * R + (1 - beta) * g2.mean(axis=d1, keepdims=True)
            C = beta * C + (1 - beta) * g2.mean(axis=d0, keepdims=True)
            mean = R.mean(axis=d0, keepdims=True)
            v = R * C / np.where(mean > 0, mean, 1.0)
        p = p - lr * g / np.sqrt(v)
        iterates.append(p.copy())
    return iterates


def run_adam_mini(params0, grads, lr, axes, b1=0.9, b2=0.999, eps=1e-8):
    """Adam-mini: one v per block (the coordinates that share an index on the axes not in `axes`).

    v_b,t = b2 v_b,t-1 + (1 - b2) mean_{i in b}(g_i^2),  u_t = mhat_t / (sqrt(vhat_b,t) + eps)
    """
    state = {"v": 0.0}

    def second_moment(g2):
        state["v"] = b2 * state["v"] + (1 - b2) * g2.mean(axis=axes, keepdims=True)
        return np.broadcast_to(state["v"], g2.shape)

    return _adam_with_second_moment(params0, grads, lr, b1, b2, eps, second_moment)
