"""Float64 NumPy closed forms of the per-coordinate effective learning rate after T steps.

Written from the formulas (optax's conventions, as in numpy_optimizers.py), independently of the
library: the rate eta_eff such that the last update is -eta_eff * d, with d = g_T for Adagrad and
RMSProp and d = m_T (the raw first moment) for the Adam family.

``effective_rate(name, grads, lr_T, **hyper)`` takes one leaf's gradients g_1..g_T (arrays of one
shape) and the learning rate of the last step; keyword names are the optax alias's.
"""

import numpy as np

from tests.reference.numpy_optimizers import _ema, novograd_momentum, sm3_momentum


def _ema_series(values, decay, start=0.0):
    """The EMA after every value, each step numpy_optimizers' `_ema`."""
    average = start
    for value in values:
        average = _ema(average, value, decay)
    return average


def _adagrad(grads, lr, initial_accumulator_value=0.1, eps=1e-7):
    total = initial_accumulator_value + sum(g * g for g in grads)
    rate = np.zeros_like(total)
    np.divide(lr, np.sqrt(total + eps), out=rate, where=total > 0)
    return rate


def _rmsprop(
    grads,
    lr,
    decay=0.9,
    eps=1e-8,
    initial_scale=0.0,
    eps_in_sqrt=True,
    centered=False,
    bias_correction=False,
    momentum=None,
    nesterov=False,
):
    del momentum, nesterov  # a momentum trace after the learning rate is not part of the rate
    t = len(grads)
    correction = 1.0 - decay**t if bias_correction else 1.0
    variance = _ema_series([g * g for g in grads], decay, initial_scale) / correction
    if centered:
        variance = variance - (_ema_series(grads, decay) / correction) ** 2
    if eps_in_sqrt:
        return lr / np.sqrt(variance + eps)
    return lr / (np.sqrt(variance) + eps)


def _adam(grads, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, nesterov=False, **unused):
    del nesterov, unused  # NAdam's rate is Adam's; weight decay, mask, mu_dtype are not in it
    t = len(grads)
    v_hat = _ema_series([g * g for g in grads], b2) / (1.0 - b2**t)
    return lr / (1.0 - b1**t) / (np.sqrt(v_hat + eps_root) + eps)


def _amsgrad(
    grads,
    lr,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    bias_correction_mu=True,
    bias_correction_nu=True,
    **unused,
):
    v, v_max = 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        v = b2 * v + (1.0 - b2) * g * g
        v_max = np.maximum(v_max, v / (1.0 - b2**t) if bias_correction_nu else v)
    mu_correction = 1.0 - b1 ** len(grads) if bias_correction_mu else 1.0
    return lr / mu_correction / (np.sqrt(v_max + eps_root) + eps)


def _adamax(grads, lr, b1=0.9, b2=0.999, eps=1e-8, **unused):
    u = 0.0
    for g in grads:
        u = np.maximum(b2 * u, np.abs(g) + eps)
    return lr / (1.0 - b1 ** len(grads)) / u


def _radam(grads, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, threshold=5.0, nesterov=False):
    """Liu et al. 2019: r_t times Adam's rate once rho_t >= threshold, else lr / (1 - b1^t)."""
    t = len(grads)
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho = rho_inf - 2.0 * t * b2**t / (1.0 - b2**t)
    if rho < threshold:
        return np.full_like(grads[-1], lr / (1.0 - b1**t))
    r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return r * _adam(grads, lr, b1, b2, eps, eps_root)


def _at(value, t):
    """A constant, or a schedule's value at step count t (as the optimizer calls it)."""
    return float(value(t)) if callable(value) else value


def _adopt(grads, lr, **unused):
    """ADOPT's update is lr m_T: the rate is lr for every coordinate (the normalization is in m)."""
    return np.full_like(grads[-1], lr)


def _laprop(grads, lr, b1=0.9, **unused):
    """LaProp's update is lr m_T / (1 - b1^T): the normalization is in m."""
    return np.full_like(grads[-1], lr / (1.0 - b1 ** len(grads)))


def _adan_moments(grads, b1=0.98, b2=0.92, b3=0.99):
    """Adan's m_T, v_T, n_T (optax's conventions, see numpy_optimizers.run_adan)."""
    m = v = n = 0.0
    for t, g in enumerate(grads, start=1):
        d = g - grads[t - 2] if t > 1 else np.zeros_like(g)
        m, v = _ema(m, g, b1), _ema(v, d, b2)
        n = _ema(n, (g + (1 - b2) * d) ** 2, b3)
    return m, v, n


def _adan(grads, lr, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8, **unused):
    """lr / (sqrt(n_T / (1 - b3^T) + eps_root) + eps); the direction is mhat + (1 - b2) vhat."""
    n = _adan_moments(grads, b1, b2, b3)[2]
    return lr / (np.sqrt(n / (1.0 - b3 ** len(grads)) + eps_root) + eps)


def _ademamix(grads, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, **unused):
    """Adam's rate without 1 / (1 - b1^T), which is in the direction m1hat + alpha m2."""
    t = len(grads)
    nu_hat = _ema_series([g * g for g in grads], b2) / (1.0 - b2**t)
    return lr / (np.sqrt(nu_hat + eps_root) + eps)


def newer_direction(name, grads, **hyper):
    """d_T that the rates of ADOPT, LaProp, Adan and AdEMAMix multiply (optax's defaults)."""
    grads = [np.asarray(g, np.float64) for g in grads]
    t = len(grads)
    if name == "adopt":
        b1, b2, eps = hyper.get("b1", 0.9), hyper.get("b2", 0.9999), hyper.get("eps", 1e-6)
        # b2 as optax and the library see it, rounded to float32: at 0.9999, 1 - b2 is 1.7e-4
        # off, which the normalized steps of a small coordinate show at 2e-4
        b2 = float(np.float32(b2))
        m, v, step = 0.0, grads[0] ** 2, 0.0
        for i, g in enumerate(grads[1:], start=1):  # i = the step count before the step
            step = np.clip(g / np.maximum(np.sqrt(v), eps), -(i**0.25), i**0.25)
            m, v = _ema(m, step, b1), _ema(v, g * g, b2)
        return _ema(m, step, b1) if hyper.get("nesterov") else m
    if name == "laprop":
        b1, b2, eps = hyper.get("b1", 0.9), hyper.get("b2", 0.999), hyper.get("eps", 1e-8)
        m = v = 0.0
        for i, g in enumerate(grads, start=1):
            v = _ema(v, g * g, b2)
            m = _ema(m, g / (np.sqrt(v / (1.0 - b2**i)) + eps), b1)
        return m
    if name == "adan":
        b1, b2, b3 = hyper.get("b1", 0.98), hyper.get("b2", 0.92), hyper.get("b3", 0.99)
        m, v, _ = _adan_moments(grads, b1, b2, b3)
        return m / (1.0 - b1**t) + (1 - b2) * v / (1.0 - b2**t)
    if name == "ademamix":
        b1, b3, alpha = hyper.get("b1", 0.9), hyper.get("b3", 0.9999), hyper.get("alpha", 5.0)
        m1 = _ema_series(grads, b1)
        m2 = 0.0
        for i, g in enumerate(grads):
            m2 = _ema(m2, g, _at(b3, i))
        return m1 / (1.0 - b1**t) + _at(alpha, t - 1) * m2
    if name == "sm3":
        return sm3_momentum(grads, hyper.get("momentum", 0.9))[-1]
    if name == "novograd":
        assert not hyper.get("weight_decay"), "the direction without decay"
        keys = ("b1", "b2", "eps", "eps_root")
        return novograd_momentum(grads, **{k: hyper[k] for k in keys if k in hyper})
    raise ValueError(name)


def _lamb(grads, lr, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, **unused):
    """LAMB's rate: Adam's (with LAMB's eps = 1e-6); the per-leaf trust ratio is left out."""
    return _adam(grads, lr, b1, b2, eps, eps_root)


def _adadelta_stats(grads, rho=0.9, eps=1e-6):
    """E[g^2]_T and E[dx^2]_{T-1} (Zeiler 2012, Algorithm 1)."""
    e_g, e_x, e_x_before = 0.0, 0.0, 0.0
    for g in grads:
        e_g = rho * e_g + (1.0 - rho) * g * g
        dx = np.sqrt(e_x + eps) / np.sqrt(e_g + eps) * g
        e_x_before, e_x = e_x, rho * e_x + (1.0 - rho) * dx * dx
    return e_g, e_x_before


def _adadelta(grads, lr, rho=0.9, eps=1e-6, **unused):
    """lr / sqrt(E[g^2]_T + eps); its direction is sqrt(E[dx^2]_{T-1} + eps) g_T."""
    e_g, _ = _adadelta_stats(grads, rho, eps)
    return lr / np.sqrt(e_g + eps)


def adadelta_direction(grads, rho=0.9, eps=1e-6, **unused):
    """sqrt(E[dx^2]_{T-1} + eps) g_T, the direction Adadelta's rate multiplies."""
    grads = [np.asarray(g, np.float64) for g in grads]
    _, e_x_before = _adadelta_stats(grads, rho, eps)
    return np.sqrt(e_x_before + eps) * grads[-1]


def _lion(grads, lr, **unused):
    """lr for every coordinate: the direction sign(b1 m_{T-1} + (1 - b1) g_T) has size 1."""
    return np.full_like(grads[-1], lr)


def lion_direction(grads, b1=0.9, b2=0.99, **unused):
    """sign(b1 m_{T-1} + (1 - b1) g_T) (Chen et al. 2023)."""
    grads = [np.asarray(g, np.float64) for g in grads]
    m = 0.0
    for g in grads[:-1]:
        m = b2 * m + (1.0 - b2) * g
    return np.sign(b1 * m + (1.0 - b1) * grads[-1])


def _adabelief(grads, lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, **unused):
    """Adam's rate with s_t = b2 s + (1 - b2) (g - m_t)^2 + eps_root for v_t."""
    m, s = 0.0, 0.0
    for g in grads:
        m = b1 * m + (1.0 - b1) * g
        s = b2 * s + (1.0 - b2) * (g - m) ** 2 + eps_root
    t = len(grads)
    return lr / (1.0 - b1**t) / (np.sqrt(s / (1.0 - b2**t)) + eps)


def _yogi(grads, lr, b1=0.9, b2=0.999, eps=1e-3, **unused):
    """Adam's rate with Yogi's v_t (starting at 1e-6)."""
    v = 1e-6
    for g in grads:
        v = v - (1.0 - b2) * np.sign(v - g * g) * g * g
    t = len(grads)
    return lr / (1.0 - b1**t) / (np.sqrt(v / (1.0 - b2**t)) + eps)


def _rprop_steps(grads, lr, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-6, max_step_size=50.0):
    """Rprop's step sizes eta_T and its last step u_T (Riedmiller & Braun 1993)."""
    step, previous = np.full_like(grads[0], lr), np.zeros_like(grads[0])
    for g in grads:
        s = g * previous
        changed = np.clip(step * np.where(s > 0, eta_plus, eta_minus), min_step_size, max_step_size)
        step = np.where(s == 0, step, changed)
        previous = np.where(s < 0, 0.0, step * np.sign(g))
    return step, previous


def _rprop(grads, lr, **hyper):
    """The step sizes eta_T: the alias' learning rate is 1 (a sign flip)."""
    return _rprop_steps(grads, lr, **hyper)[0]


def rprop_direction(grads, lr, **hyper):
    """sign(g_T), 0 where the gradient's sign flipped: the direction Rprop's rate multiplies."""
    return np.sign(_rprop_steps([np.asarray(g, np.float64) for g in grads], lr, **hyper)[1])


def _sm3(grads, lr, **unused):
    """SM3's and NovoGrad's rate: the learning rate alone; the direction, the momentum of
    g / sqrt(v) (numpy_optimizers.sm3_momentum, novograd_momentum), holds the adaptivity."""
    return np.full(np.shape(grads[0]), lr)


def _schedule_free_adamw(grads, lr, warmup_steps=None, b2=0.999, eps=1e-8, **unused):
    """The rate of the z step: the (warmed-up) rate at the last step's count T - 1 over
    sqrt(v_hat) + eps (AdamW without momentum); the interpolation's terms are left out."""
    t = len(grads)
    rate = lr if warmup_steps is None else lr * min(t - 1, warmup_steps) / warmup_steps
    return rate / (np.sqrt(_ema_series([g * g for g in grads], b2) / (1.0 - b2**t)) + eps)


def schedule_free_update(z_step, y, z, weight_sum, max_rate, rate, b1=0.9, weight_lr_power=2.0):
    """u_T = y_T - y_{T-1} of schedule-free learning from the z step dz = z_T - z_{T-1}, the
    parameters y_{T-1}, z_{T-1} and the averaging sums before the step (Defazio et al. 2024):
    (1 - b1) dz + b1 c_T (z_T - x_{T-1}), x_{T-1} = (y - (1 - b1) z) / b1."""
    y, z, z_step = (np.asarray(a, np.float64) for a in (y, z, z_step))
    weight = max(float(max_rate), rate) ** weight_lr_power
    c = weight / (float(weight_sum) + weight)
    x = (y - (1.0 - b1) * z) / b1
    return (1.0 - b1) * z_step + b1 * c * (z + z_step - x)


RATES = {
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adam,
    "nadam": _adam,
    "nadamw": _adam,
    "amsgrad": _amsgrad,
    "adamax": _adamax,
    "adamaxw": _adamax,
    "radam": _radam,
    "adopt": _adopt,
    "laprop": _laprop,
    "adan": _adan,
    "ademamix": _ademamix,
    "lamb": _lamb,
    "adadelta": _adadelta,
    "lion": _lion,
    "adabelief": _adabelief,
    "yogi": _yogi,
    "rprop": _rprop,


    "sm3": _sm3,
    "novograd": _sm3,
    "schedule_free_adamw": _schedule_free_adamw,
}


def effective_rate(name, grads, lr, **hyper):
    """The effective learning rate of alias `name` after the gradients `grads` of one leaf."""
    grads = [np.asarray(g, np.float64) for g in grads]
    return RATES[name](grads, lr, **hyper)


def first_moment(grads, b1=0.9, start=0.0, **unused):
    """m_T, the direction the Adam family's rate multiplies (Yogi's starts at 1e-6)."""
    return _ema_series([np.asarray(g, np.float64) for g in grads], b1, start)


def nesterov_direction(grads, b1=0.9, momentum_decay=None, **unused):
    """NAdam's look-ahead direction d_T that its rate multiplies (Dozat 2016):
    mu_{T+1} (1 - Pi_T) / (1 - Pi_{T+1}) m_T + (1 - mu_T) g_T, with mu_t = b1 (1 - 0.96^(t psi) / 2)
    (torch: psi = 0.004, keras: 1) or mu_t = b1 (optax, momentum_decay None) and Pi_t their product.
    """
    grads = [np.asarray(g, np.float64) for g in grads]
    t = len(grads)

    def mu(i):
        return b1 if momentum_decay is None else b1 * (1 - 0.5 * 0.96 ** (i * momentum_decay))

    product = np.prod([mu(i) for i in range(1, t + 1)])
    ratio = (1 - product) / (1 - product * mu(t + 1))
    return mu(t + 1) * ratio * first_moment(grads, b1) + (1 - mu(t)) * grads[-1]


def trust_ratio(update, lr, param):
    """LAMB's per-leaf factor after the rate (You et al. 2019): the update u = -lr * u~ without it
    gives u~ = -u / lr, and the factor is |param| / |u~| (1 where either norm is 0)."""
    param_norm = np.linalg.norm(np.asarray(param, np.float64))
    update_norm = np.linalg.norm(np.asarray(update, np.float64) / lr)
    if param_norm == 0 or update_norm == 0:
        return 1.0
    return param_norm / update_norm


def adafactor_leaf_factor(grad, rate, lr, param, clipping_threshold=1.0, min_scale=1e-3):
    """Adafactor's per-leaf factor after the rate: min(1, c / RMS(g * rate / lr)) (update clipping;
    1 when c is None) times max(min_scale, RMS(param)) (1 when min_scale is None)."""
    rms = lambda x: np.sqrt(np.mean(np.square(np.asarray(x, np.float64))))
    clip = 1.0
    if clipping_threshold is not None:
        clip = min(1.0, clipping_threshold / rms(grad * rate / lr))
    scale = 1.0 if min_scale is None else max(min_scale, rms(param))
    return clip * scale
