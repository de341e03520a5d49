"""Float64 NumPy reference of schedule-free AdamW (Defazio et al. 2024, Algorithm 1).

Written from the paper, independently of optax and adaptive_tx: the three sequences are kept as
the paper writes them (x and z stored, y formed from them), where the library keeps z alone and
recovers x from the parameters. Conventions are those of ``optax.contrib.schedule_free_adamw``:

- the averaging weight of step t is :math:`\\gamma_{\\max,t}^{p}` with :math:`\\gamma_{\\max,t}` the
  largest rate so far (the authors' code), the rate read at t = 1, 2, ... (the schedule-free
  step count), while the z step reads the rate at t - 1 (the base optimizer's count); a weight
  sum of 0 gives c = 0;
- warm-up: linear from 0 to the peak over ``warmup_steps`` steps, then constant;
- the base step is AdamW without momentum: bias-corrected second moment, eps outside the root,
  weight decay at y, times the rate.
"""

import numpy as np


def _rate(lr, warmup_steps):
    """The rate at count k (0, 1, ...): the peak, or its linear warm-up."""
    if warmup_steps is None:
        return lambda k: float(lr)
    return lambda k: float(lr) * min(k, warmup_steps) / warmup_steps


def schedule_free_adamw_sequences(
    params0,
    grads,
    lr,
    warmup_steps=None,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    weight_lr_power=2.0,
):
    """(y_t, x_t) after each step t = 1..T: the training parameters and the average."""
    rate = _rate(lr, warmup_steps)
    x = np.array(params0, dtype=np.float64)
    z = x.copy()
    v = np.zeros_like(x)
    max_rate, weight_sum = 0.0, 0.0
    ys, xs = [], []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        y = (1.0 - b1) * z + b1 * x  # where the gradient is taken
        v = b2 * v + (1.0 - b2) * g * g
        v_hat = v / (1.0 - b2**t)
        z = z - rate(t - 1) * (g / (np.sqrt(v_hat) + eps) + weight_decay * y)
        max_rate = max(max_rate, rate(t))
        weight = max_rate**weight_lr_power
        weight_sum += weight
        c = weight / weight_sum if weight_sum > 0 else 0.0
        x = (1.0 - c) * x + c * z
        ys.append((1.0 - b1) * z + b1 * x)
        xs.append(x.copy())
    return ys, xs


def run_schedule_free_adamw(
    params0,
    grads,
    lr,
    warmup_steps=None,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    weight_lr_power=2.0,
    state_dtype=None,
):
    """The training parameters y_t after each step (the runners' convention)."""
    assert state_dtype is None  # a storage option, not part of the method
    hyper = dict(b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, weight_lr_power=weight_lr_power)
    return schedule_free_adamw_sequences(params0, grads, lr, warmup_steps, **hyper)[0]
