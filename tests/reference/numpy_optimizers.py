"""Float64 NumPy references of adaptive gradient methods.

Written from the papers' update rules, using the conventions optax documents
(where eps sits, how bias correction and momentum are applied), and
independently of any optax or adaptive_tx code: these are what the library is
tested against.

Every ``run_<name>(params0, grads, lr, **hyper)`` returns the parameter after
each step (``len(grads)`` arrays). ``lr`` is a float or a schedule ``lr(t)``
called with t = 0, 1, 2, ... (the number of steps already taken, as in optax).
Each step is ``p <- p - lr_t * u_t``; inside the formulas t counts from 1.
"""

import numpy as np


def _schedule(value):
    """A constant or a schedule, as a float-valued function of t = 0, 1, ..."""
    if callable(value):
        return lambda t: float(value(t))
    return lambda t: float(value)


def _iterate(params0, grads, lr, direction):
    """p <- p - lr(t - 1) * direction(t, g_t, p) for t = 1..T; returns every iterate."""
    lr = _schedule(lr)
    p = np.array(params0, dtype=np.float64)
    iterates = []
    for t, g in enumerate(grads, start=1):
        p = p - lr(t - 1) * direction(t, np.asarray(g, dtype=np.float64), p)
        iterates.append(p.copy())
    return iterates


def _ema(average, value, decay):
    return decay * average + (1.0 - decay) * value


def _debias(moment, decay, t):
    return moment / (1.0 - decay**t)


def _first_moment_hat(m, g, b1, t, nesterov):
    """mhat = m_t / (1 - b1^t); with Nesterov (Dozat 2016) the look-ahead
    mhat = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)."""
    if nesterov:
        return b1 * m / (1.0 - b1 ** (t + 1)) + (1.0 - b1) * g / (1.0 - b1**t)
    return _debias(m, b1, t)


def _momentum_schedule(b1, momentum_decay):
    """Dozat's NAdam (torch, keras): mu_t = b1 (1 - 0.96^(t psi) / 2) and the running product
    prod_t = mu_1 ... mu_t; returns mhat(m, g, t), to be called once per step, in order:
    mhat = mu_{t+1} m_t / (1 - prod_{t+1}) + (1 - mu_t) g_t / (1 - prod_t)."""
    product = [1.0]

    def mu(t):
        return b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))

    def mhat(m, g, t):
        product[0] *= mu(t)
        return mu(t + 1) * m / (1.0 - product[0] * mu(t + 1)) + (1.0 - mu(t)) * g / (
            1.0 - product[0]
        )

    return mhat


def _denominator(v, b2, t, eps, eps_root, eps_hat, debias=True):
    """sqrt(vhat + eps_root) + eps; with eps_hat (Kingma & Ba's epsilon-hat, keras) eps is added
    to the uncorrected sqrt(v_t): (sqrt(v_t) + eps) / sqrt(1 - b2^t)."""
    if eps_hat:
        assert eps_root == 0.0 and debias, "eps_hat is defined here with a bias-corrected v only"
        return (np.sqrt(v) + eps) / np.sqrt(1.0 - b2**t)
    vhat = _debias(v, b2, t) if debias else v
    return np.sqrt(vhat + eps_root) + eps


def run_adagrad(params0, grads, lr, initial_accumulator_value=0.1, eps=1e-7):
    """Adagrad (diagonal).

    G_t = G_{t-1} + g_t^2,  G_0 = initial_accumulator_value
    u_t = g_t / sqrt(G_t + eps)  where G_t > 0, else 0

    Duchi, Hazan, Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 12, 2011 (no arXiv version):
    https://jmlr.org/papers/v12/duchi11a.html
    """
    accumulator = initial_accumulator_value

    def direction(t, g, p):
        nonlocal accumulator
        accumulator = accumulator + g * g
        scale = np.zeros_like(accumulator)
        np.divide(1.0, np.sqrt(accumulator + eps), out=scale, where=accumulator > 0)
        return scale * g

    return _iterate(params0, grads, lr, direction)


def run_rmsprop(
    params0,
    grads,
    lr,
    decay=0.9,
    eps=1e-8,
    initial_scale=0.0,
    eps_in_sqrt=True,
    centered=False,
    momentum=None,
    nesterov=False,
    bias_correction=False,
):
    """RMSProp, optionally centered, bias-corrected and with momentum.

    nu_t = decay nu_{t-1} + (1 - decay) g_t^2,  nu_0 = initial_scale
    mu_t = decay mu_{t-1} + (1 - decay) g_t,    mu_0 = 0   (centered only)
    bias_correction: nuhat = nu_t / (1 - decay^t), muhat = mu_t / (1 - decay^t)
    var = max(nuhat - muhat^2, 0) if centered else nuhat
    s_t = 1 / sqrt(var + eps) if eps_in_sqrt else 1 / (sqrt(var) + eps)
    The learning rate comes before momentum: v_t = lr_t s_t g_t, and
    trace_t = v_t + momentum trace_{t-1};  step = trace_t, or with nesterov
    step = v_t + momentum trace_t;  p <- p - step (p <- p - v_t without momentum).

    Hinton, Srivastava, Swersky, "Neural Networks for Machine Learning,
    Lecture 6e: rmsprop", 2012:
    http://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf
    Centered form: Graves, "Generating Sequences With Recurrent Neural
    Networks", 2013, eqs. (38)-(41): https://arxiv.org/abs/1308.0850
    """
    lr = _schedule(lr)
    nu, mu, trace = initial_scale, 0.0, 0.0

    def step(t, g, p):
        nonlocal nu, mu, trace
        nu, mu = _ema(nu, g * g, decay), _ema(mu, g, decay)
        nuhat, muhat = (
            (_debias(nu, decay, t), _debias(mu, decay, t)) if bias_correction else (nu, mu)
        )
        # A variance: >= 0, though rounding can leave nuhat - muhat^2 an ulp below 0 where g has
        # not varied (at the first bias-corrected step it is g^2 - g^2).
        var = np.maximum(nuhat - muhat**2, 0.0) if centered else nuhat
        s = 1.0 / np.sqrt(var + eps) if eps_in_sqrt else 1.0 / (np.sqrt(var) + eps)
        v = lr(t - 1) * s * g
        if momentum is None:
            return v
        trace = v + momentum * trace
        return v + momentum * trace if nesterov else trace

    # `step` already includes the learning rate (it is applied before momentum).
    return _iterate(params0, grads, 1.0, step)


def run_adam(
    params0,
    grads,
    lr,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    nesterov=False,
    weight_decay=0.0,
    eps_hat=False,
    momentum_decay=None,
):
    """Adam; NAdam with nesterov=True; AdamW with weight_decay != 0.

    m_t = b1 m_{t-1} + (1 - b1) g_t,  v_t = b2 v_{t-1} + (1 - b2) g_t^2
    mhat = m_t / (1 - b1^t)
      (nesterov: mhat = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t);
       with momentum_decay psi, Dozat's schedule mu_t = b1 (1 - 0.96^(t psi) / 2):
       mhat = mu_{t+1} m_t / (1 - mu_1..mu_{t+1}) + (1 - mu_t) g_t / (1 - mu_1..mu_t))
    vhat = v_t / (1 - b2^t)
    u_t = mhat / (sqrt(vhat + eps_root) + eps) + wd_t p_{t-1}
      (eps_hat: mhat sqrt(1 - b2^t) / (sqrt(v_t) + eps) + wd_t p_{t-1})
    (weight_decay may be a schedule wd(t), t = 0, 1, ...; it is multiplied by
    lr_t together with the rest of u_t.)

    Kingma, Ba, "Adam: A Method for Stochastic Optimization", 2014:
    https://arxiv.org/abs/1412.6980
    Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016:
    https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ
    Loshchilov, Hutter, "Decoupled Weight Decay Regularization", ICLR 2019:
    https://arxiv.org/abs/1711.05101
    """
    wd = _schedule(weight_decay)
    m = v = 0.0
    scheduled = None if momentum_decay is None else _momentum_schedule(b1, momentum_decay)

    def direction(t, g, p):
        nonlocal m, v
        m, v = _ema(m, g, b1), _ema(v, g * g, b2)
        if scheduled is None:
            mhat = _first_moment_hat(m, g, b1, t, nesterov)
        else:
            assert nesterov, "the momentum schedule is NAdam's"
            mhat = scheduled(m, g, t)
        return mhat / _denominator(v, b2, t, eps, eps_root, eps_hat) + wd(t - 1) * p

    return _iterate(params0, grads, lr, direction)


def run_amsgrad(
    params0,
    grads,
    lr,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    bias_correction_mu=True,
    bias_correction_nu=True,
    amsgrad_raw_max=False,
    eps_hat=False,
):
    """AMSGrad: Adam with a running maximum of the second moment.

    m_t, v_t as in Adam
    mhat = m_t / (1 - b1^t) if bias_correction_mu else m_t
    vhat = v_t / (1 - b2^t) if bias_correction_nu else v_t
    vmax_t = max(vmax_{t-1}, vhat),  vmax_0 = 0
    u_t = mhat / (sqrt(vmax_t + eps_root) + eps)
    amsgrad_raw_max (torch, keras): vmax_t = max(vmax_{t-1}, v_t), corrected afterwards:
    u_t = mhat / (sqrt(vmax_t / (1 - b2^t) + eps_root) + eps), or with eps_hat (keras)
    u_t = mhat sqrt(1 - b2^t) / (sqrt(vmax_t) + eps).

    Reddi, Kale, Kumar, "On the Convergence of Adam and Beyond", ICLR 2018:
    https://arxiv.org/abs/1904.09237
    """
    m = v = vmax = 0.0

    def direction(t, g, p):
        nonlocal m, v, vmax
        m, v = _ema(m, g, b1), _ema(v, g * g, b2)
        mhat = _debias(m, b1, t) if bias_correction_mu else m
        if amsgrad_raw_max:
            vmax = np.maximum(vmax, v)
            return mhat / _denominator(vmax, b2, t, eps, eps_root, eps_hat, bias_correction_nu)
        vmax = np.maximum(vmax, _debias(v, b2, t) if bias_correction_nu else v)
        return mhat / (np.sqrt(vmax + eps_root) + eps)

    return _iterate(params0, grads, lr, direction)


def run_adamax(params0, grads, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, eps_in_max=True):
    """Adamax (Adam with the infinity norm); AdamaxW with weight_decay != 0.

    m_t = b1 m_{t-1} + (1 - b1) g_t
    u_t = max(b2 u_{t-1}, |g_t| + eps),  u_0 = 0
    update = (m_t / (1 - b1^t)) / u_t + wd_t p_{t-1}
    eps_in_max=False (keras): u_t = max(b2 u_{t-1}, |g_t|), update = (m_t / (1 - b1^t)) / (u_t + eps)

    Kingma, Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.1:
    https://arxiv.org/abs/1412.6980
    """
    wd = _schedule(weight_decay)
    m = u = 0.0

    def direction(t, g, p):
        nonlocal m, u
        if eps_in_max:
            m, u = _ema(m, g, b1), np.maximum(b2 * u, np.abs(g) + eps)
            return _debias(m, b1, t) / u + wd(t - 1) * p
        m, u = _ema(m, g, b1), np.maximum(b2 * u, np.abs(g))
        return _debias(m, b1, t) / (u + eps) + wd(t - 1) * p

    return _iterate(params0, grads, lr, direction)


def run_radam(
    params0,
    grads,
    lr,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    threshold=5.0,
    nesterov=False,
    eps_hat=False,
    strict_threshold=False,
):
    """Rectified Adam.

    m_t, v_t, mhat (optionally Nesterov), vhat as in Adam
    rho_inf = 2 / (1 - b2) - 1,  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    if rho_t >= threshold (strict_threshold, torch: rho_t > threshold):
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        u_t = r_t mhat / (sqrt(vhat + eps_root) + eps)
          (eps_hat, torch: r_t mhat sqrt(1 - b2^t) / (sqrt(v_t) + eps))
    else:
        u_t = mhat

    Liu, Jiang, He, Chen, Liu, Gao, Han, "On the Variance of the Adaptive
    Learning Rate and Beyond", 2019: https://arxiv.org/abs/1908.03265
    """
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    m = v = 0.0

    def direction(t, g, p):
        nonlocal m, v
        m, v = _ema(m, g, b1), _ema(v, g * g, b2)
        mhat = _first_moment_hat(m, g, b1, t, nesterov)
        rho = rho_inf - 2.0 * t * b2**t / (1.0 - b2**t)
        if rho < threshold or (strict_threshold and rho == threshold):
            return mhat
        r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        return r * mhat / _denominator(v, b2, t, eps, eps_root, eps_hat)

    return _iterate(params0, grads, lr, direction)


def run_rowwise_adagrad(params0, grads, lr, initial_accumulator_value=0.0, eps=1e-7):
    """Row-wise Adagrad: one accumulator per row of a 2-d table.

    G_{t,r} = G_{t-1,r} + (1/D) sum_d g_{t,r,d}^2,  G_0 = initial_accumulator_value
    u_{t,r,d} = g_{t,r,d} / sqrt(G_{t,r} + eps)  where G_{t,r} > 0, else 0

    FBGEMM's rowwise_adagrad (fbgemm_gpu/codegen/genscript/optimizers.py,
    https://github.com/pytorch/FBGEMM) accumulates the same per-row mean; it adds
    eps outside the root, here eps sits inside, as in optax's Adagrad. Adagrad:
    Duchi, Hazan, Singer, JMLR 12, 2011, https://jmlr.org/papers/v12/duchi11a.html
    """
    accumulator = np.full((np.shape(params0)[0], 1), float(initial_accumulator_value))

    def direction(t, g, p):
        nonlocal accumulator
        accumulator = accumulator + np.mean(g * g, axis=1, keepdims=True)
        scale = np.zeros_like(accumulator)
        np.divide(1.0, np.sqrt(accumulator + eps), out=scale, where=accumulator > 0)
        return scale * g

    return _iterate(params0, grads, lr, direction)


def run_adopt(
    params0,
    grads,
    lr,
    b1=0.9,
    b2=0.9999,
    eps=1e-6,
    nesterov=False,
    use_clipping=True,
    clip_value_fn=lambda count: count**0.25,
):
    """ADOPT (Taniguchi et al. 2024, Algorithm 2 with clipping): the gradient is normalized by the
    second moment of the *previous* steps, clipped, then averaged; v_0 = g_0^2 is measured at the
    first step, which does not move (optax's indexing: the paper's g_0 is the first gradient).
    m_t = b1 m + (1 - b1) clip(g_t / max(sqrt(v_{t-1}), eps), +-c(t-1)),
    v_t = b2 v + (1 - b2) g_t^2, update m_t (nesterov: b1 m_t + (1 - b1) clip(...))."""
    state = {}

    def direction(t, g, p):
        if t == 1:
            state["m"], state["v"] = np.zeros_like(g), g * g
            return np.zeros_like(g)
        step = g / np.maximum(np.sqrt(state["v"]), eps)
        if use_clipping:
            bound = float(clip_value_fn(t - 1))
            step = np.clip(step, -bound, bound)
        state["m"] = _ema(state["m"], step, b1)
        state["v"] = _ema(state["v"], g * g, b2)
        return _ema(state["m"], step, b1) if nesterov else state["m"]

    return _iterate(params0, grads, lr, direction)


def run_laprop(params0, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """LaProp (Ziyin, Wang & Ueda 2020, Algorithm 1): v_t = b2 v + (1 - b2) g^2,
    m_t = b1 m + (1 - b1) g / (sqrt(v_t / (1 - b2^t)) + eps), update m_t / (1 - b1^t). (The
    paper multiplies each normalized gradient by its step's rate inside the momentum; with a
    constant rate, as here, that is the same.)"""
    assert not callable(lr), "the paper's rate enters the momentum: a constant rate only"
    state = {}

    def direction(t, g, p):
        v = _ema(state.get("v", 0.0), g * g, b2)
        m = _ema(state.get("m", 0.0), g / (np.sqrt(_debias(v, b2, t)) + eps), b1)
        state.update(m=m, v=v)
        return _debias(m, b1, t)

    return _iterate(params0, grads, lr, direction)


def run_adan(
    params0, grads, lr, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8, weight_decay=0.0
):
    """Adan (Xie et al. 2022, Algorithm 1), with optax's conventions: the betas weigh the *old*
    value (the paper's 1 - beta), the moments start at 0 and are bias-corrected (the paper starts
    them at the first gradient), and the weight decay is decoupled, -lr wd p (the paper's
    proximal 1 / (1 + lr wd) to first order).
    d_t = g_t - g_{t-1} (0 at t = 1), m_t = ema(g), v_t = ema(d, b2),
    n_t = ema((g_t + (1 - b2) d_t)^2, b3), update (mhat + (1 - b2) vhat) / (sqrt(nhat + eps_root)
    + eps) + wd p."""
    wd = _schedule(weight_decay)
    state = {}

    def direction(t, g, p):
        d = g - state["g"] if t > 1 else np.zeros_like(g)
        m = _ema(state.get("m", 0.0), g, b1)
        v = _ema(state.get("v", 0.0), d, b2)
        n = _ema(state.get("n", 0.0), (g + (1 - b2) * d) ** 2, b3)
        state.update(m=m, v=v, n=n, g=g)
        u = (_debias(m, b1, t) + (1 - b2) * _debias(v, b2, t)) / (
            np.sqrt(_debias(n, b3, t) + eps_root) + eps
        )
        return u + wd(t - 1) * p

    return _iterate(params0, grads, lr, direction)


def run_adadelta(params0, grads, lr, rho=0.9, eps=1e-6, weight_decay=0.0):
    """Zeiler 2012, Algorithm 1 (with optax's learning rate and coupled L2, g + wd p):
    E[g^2]_t = rho E[g^2]_{t-1} + (1 - rho) g^2,
    dx_t = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) g,
    E[dx^2]_t = rho E[dx^2]_{t-1} + (1 - rho) dx_t^2; p <- p - lr dx_t."""
    e_g, e_x = 0.0, 0.0
    wd = _schedule(weight_decay)

    def direction(t, g, p):
        nonlocal e_g, e_x
        g = g + wd(t - 1) * p
        e_g = rho * e_g + (1.0 - rho) * g * g
        dx = np.sqrt(e_x + eps) / np.sqrt(e_g + eps) * g
        e_x = rho * e_x + (1.0 - rho) * dx * dx
        return dx

    return _iterate(params0, grads, lr, direction)


def run_ademamix(
    params0,
    grads,
    lr,
    b1=0.9,
    b2=0.999,
    b3=0.9999,
    alpha=5.0,
    eps=1e-8,
    eps_root=0.0,
    weight_decay=0.0,
):
    """AdEMAMix (Pagliardini, Ablin & Grangier 2024, Algorithm 1): a fast bias-corrected moment
    and a slow uncorrected one, b3 and alpha constants or schedules of t - 1,
    update (m1 / (1 - b1^t) + alpha m2) / (sqrt(nu / (1 - b2^t) + eps_root) + eps) + wd p."""
    b3, alpha = _schedule(b3), _schedule(alpha)
    state = {}

    def direction(t, g, p):
        m1 = _ema(state.get("m1", 0.0), g, b1)
        m2 = _ema(state.get("m2", 0.0), g, b3(t - 1))
        nu = _ema(state.get("nu", 0.0), g * g, b2)
        state.update(m1=m1, m2=m2, nu=nu)
        u = (_debias(m1, b1, t) + alpha(t - 1) * m2) / (
            np.sqrt(_debias(nu, b2, t) + eps_root) + eps
        )
        return u + weight_decay * p

    return _iterate(params0, grads, lr, direction)


def run_lion(params0, grads, lr, b1=0.9, b2=0.99, weight_decay=1e-3):
    """Chen et al. 2023, Algorithm 2: c_t = b1 m_{t-1} + (1 - b1) g_t,
    p <- p - lr (sign(c_t) + wd p), m_t = b2 m_{t-1} + (1 - b2) g_t."""
    m = 0.0
    wd = _schedule(weight_decay)

    def direction(t, g, p):
        nonlocal m
        c = b1 * m + (1.0 - b1) * g
        m = b2 * m + (1.0 - b2) * g
        return np.sign(c) + wd(t - 1) * p

    return _iterate(params0, grads, lr, direction)


def cautious_mask(u, g, floor=1e-3):
    """Cautious masking (Liang et al. 2024, "Cautious Optimizers", Algorithm 1): keep the update
    where it has the gradient's sign, phi = [u g > 0], rescaled by the mask's mean over the
    tensor (at least `floor`): u phi / max(mean(phi), floor)."""
    phi = (u * g > 0).astype(np.float64)
    return u * phi / max(phi.mean(), floor)


def run_cautious_adamw(
    params0, grads, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, floor=1e-3
):
    """C-AdamW (Liang et al. 2024, Algorithm 2): Adam's direction, masked by `cautious_mask`, then
    the decoupled weight decay (not masked): update mask(u_Adam, g) + wd p."""
    state = {}

    def direction(t, g, p):
        m = _ema(state.get("m", 0.0), g, b1)
        v = _ema(state.get("v", 0.0), g * g, b2)
        state.update(m=m, v=v)
        u = _debias(m, b1, t) / (np.sqrt(_debias(v, b2, t)) + eps)
        return cautious_mask(u, g, floor) + weight_decay * p

    return _iterate(params0, grads, lr, direction)


def run_ftrl(
    params0,
    grads,
    lr,
    learning_rate_power=-0.5,
    initial_accumulator_value=0.1,
    l1=0.0,
    l2=0.0,
    l2_shrinkage=0.0,
    beta=0.0,
    with_state=False,
):
    """FTRL-Proximal, McMahan et al. 2013 (KDD, "Ad Click Prediction"), Algorithm 1, per coordinate:

        sigma = (n_new^(-p) - n^(-p)) / alpha,  z += g~ - sigma * w,  n = n_new = n + g^2,
        w = 0 if |z| <= l1 else -(z - sign(z) l1) / ((beta + n^(-p)) / alpha + L2),

    with p = -1/2 in the paper (here any p <= 0), the paper's L2 strength written as 2 * l2 (the
    gradient of l2 * w^2, keras' convention) and the shrinkage gradient g~ = g + 2 l2_shrinkage w.
    A coordinate whose denominator is 0 (no gradient yet with n_0 = 0, no L2, no beta) stays 0.
    Returns every iterate (and, with `with_state`, the final (n, z))."""
    p = np.array(params0, dtype=np.float64)
    n = np.full_like(p, initial_accumulator_value)
    z = np.zeros_like(p)
    power = -learning_rate_power
    iterates = []
    for g in grads:
        g = np.asarray(g, dtype=np.float64)
        n_new = n + g * g
        sigma = (n_new**power - n**power) / lr
        z = z + g + 2 * l2_shrinkage * p - sigma * p
        n = n_new
        denominator = (beta + n**power) / lr + 2 * l2
        shrunk = np.where(np.abs(z) <= l1, 0.0, z - np.sign(z) * l1)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(shrunk == 0, 0.0, -shrunk / np.where(denominator > 0, denominator, 1.0))
        p = np.where(denominator > 0, p, 0.0)
        iterates.append(p.copy())
    return (iterates, (n, z)) if with_state else iterates


def run_lamb(params0, grads, lr, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, weight_decay=0.0):
    """LAMB, You et al. 2019 ("Large Batch Optimization for Deep Learning", Algorithm 2), with
    one leaf as the layer:

        m_t, v_t as Adam's, r_t = mhat / (sqrt(vhat + eps_root) + eps) + wd p_{t-1}
        p_t = p_{t-1} - lr_t * (||p_{t-1}|| / ||r_t||) * r_t   (ratio 1 where a norm is 0)

    https://arxiv.org/abs/1904.00962"""
    lr = _schedule(lr)
    p = np.array(params0, dtype=np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    iterates = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=np.float64)
        m, v = _ema(m, g, b1), _ema(v, g * g, b2)
        r = _debias(m, b1, t) / (np.sqrt(_debias(v, b2, t) + eps_root) + eps) + weight_decay * p
        p_norm, r_norm = np.linalg.norm(p), np.linalg.norm(r)
        ratio = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
        p = p - lr(t - 1) * ratio * r
        iterates.append(p.copy())
    return iterates


def run_adabelief(params0, grads, lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, nesterov=False):
    """Zhuang et al. 2020, Algorithm 2 (eps_root added to s_t at every step, as in the paper):
    m_t = b1 m + (1 - b1) g, s_t = b2 s + (1 - b2) (g - m_t)^2 + eps_root,
    p <- p - lr mhat / (sqrt(s_t / (1 - b2^t)) + eps) (mhat: Adam's, or NAdam's look-ahead)."""
    m, s = 0.0, 0.0

    def direction(t, g, p):
        nonlocal m, s
        m = _ema(m, g, b1)
        s = _ema(s, (g - m) ** 2, b2) + eps_root
        return _first_moment_hat(m, g, b1, t, nesterov) / (np.sqrt(_debias(s, b2, t)) + eps)

    return _iterate(params0, grads, lr, direction)


def run_yogi(params0, grads, lr, b1=0.9, b2=0.999, eps=1e-3, eps_root=0.0, initial=1e-6):
    """Zaheer et al. 2018, Algorithm 2 with Adam's bias corrections (optax's convention, both
    moments starting at 1e-6): v_t = v - (1 - b2) sign(v - g^2) g^2,
    p <- p - lr mhat / (sqrt(vhat + eps_root) + eps)."""
    m, v = initial, initial

    def direction(t, g, p):
        nonlocal m, v
        m = _ema(m, g, b1)
        v = v - (1.0 - b2) * np.sign(v - g * g) * g * g
        return _debias(m, b1, t) / (np.sqrt(_debias(v, b2, t) + eps_root) + eps)

    return _iterate(params0, grads, lr, direction)


def run_rprop(
    params0, grads, lr, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-6, max_step_size=50.0,
    clamp_unchanged=False,
):
    """Riedmiller & Braun 1993 (Rprop without weight backtracking, as torch.optim.Rprop): with
    s = g_t * u_{t-1}, eta_t = min(eta * eta_plus, max) if s > 0, max(eta * eta_minus, min) if
    s < 0, else eta (clamped to [min, max] with clamp_unchanged, torch's); u_t = 0 if s < 0 else
    eta_t sign(g_t); p <- p - u_t. lr is the initial step size (a number)."""
    step, previous = None, 0.0

    def direction(t, g, p):
        nonlocal step, previous
        if step is None:
            step = np.full_like(g, lr)
        s = g * previous
        changed = np.clip(step * np.where(s > 0, eta_plus, eta_minus), min_step_size, max_step_size)
        unchanged = np.clip(step, min_step_size, max_step_size) if clamp_unchanged else step
        step = np.where(s == 0, unchanged, changed)
        previous = np.where(s < 0, 0.0, step * np.sign(g))
        return previous

    return _iterate(params0, grads, 1.0, direction)


def sm3_momentum(grads, momentum=0.9, b2=1.0, eps=1e-8):
    """SM3-II, Anil et al. 2019 ("Memory-Efficient Adaptive Optimization", Algorithm SM3-II, with
    the cover of a rank-k tensor by its k families of slices, and momentum on the step), for one
    leaf: with mu_i the vector of axis i (the leaf itself for rank < 2),

        v_t = g^2 + min_i mu_i[j_i]       (b2 < 1: (1 - b2) g^2 + b2 min_i mu_i[j_i])
        s_t = g / sqrt(v_t + eps)  (0 where v_t = 0),   m_t = momentum m_{t-1} + (1 - momentum) s_t
        mu_i[r] = max of v_t over the slice j_i = r

    Returns m_t after every step. https://arxiv.org/abs/1901.11150"""
    grads = [np.asarray(g, dtype=np.float64) for g in grads]
    shape = grads[0].shape
    rank = len(shape)
    cover = rank >= 2
    mu = [np.zeros(n) for n in shape] if cover else [np.zeros(shape)]
    m = np.zeros(shape)
    coefficient = 1.0 if b2 == 1.0 else 1.0 - b2
    moments = []
    for g in grads:
        if cover:
            expanded = [
                mu[i].reshape([n if a == i else 1 for a, n in enumerate(shape)])
                for i in range(rank)
            ]
            previous = np.minimum.reduce(np.broadcast_arrays(*expanded))
        else:
            previous = mu[0]
        v = coefficient * g * g + b2 * previous
        step = np.zeros(shape)
        np.divide(g, np.sqrt(v + eps), out=step, where=v > 0)
        m = _ema(m, step, momentum)
        if cover:
            mu = [v.max(axis=tuple(a for a in range(rank) if a != i)) for i in range(rank)]
        else:
            mu = [v]
        moments.append(m.copy())
    return moments


def run_sm3(params0, grads, lr, momentum=0.9):
    """SM3 (see `sm3_momentum`): p_t = p_{t-1} - lr_t m_t."""
    lr = _schedule(lr)
    p = np.array(params0, dtype=np.float64)
    iterates = []
    for t, m in enumerate(sm3_momentum(grads, momentum), start=1):
        p = p - lr(t - 1) * m
        iterates.append(p.copy())
    return iterates



def run_novograd(params0, grads, lr, b1=0.9, b2=0.25, eps=1e-6, eps_root=0.0, weight_decay=0.0):
    """NovoGrad, Ginsburg et al. 2019 ("Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks", Algorithm 1), one leaf as the layer:

        v_1 = ||g_1||^2,  v_t = b2 v_{t-1} + (1 - b2) ||g_t||^2
        s_t = g_t / (sqrt(v_t + eps_root) + eps) + wd p_{t-1}
        m_1 = s_1,  m_t = b1 m_{t-1} + s_t,  p_t = p_{t-1} - lr_t m_t

    https://arxiv.org/abs/1905.11286"""
    lr = _schedule(lr)
    p = np.array(params0, dtype=np.float64)
    m = v = 0.0
    iterates = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=np.float64)
        squares = float(np.sum(g * g))
        v = squares if t == 1 else b2 * v + (1.0 - b2) * squares
        step = g / (np.sqrt(v + eps_root) + eps) + weight_decay * p
        m = step if t == 1 else b1 * m + step
        p = p - lr(t - 1) * m
        iterates.append(p.copy())
    return iterates


def novograd_momentum(grads, b1=0.9, b2=0.25, eps=1e-6, eps_root=0.0):
    """m_T of `run_novograd` without weight decay (which reads the parameters): the step's
    direction, from a leaf's gradients alone."""
    lr = 1.0
    p0 = np.zeros(np.shape(grads[0]))
    iterates = run_novograd(p0, grads, lr, b1, b2, eps, eps_root)
    previous = iterates[-2] if len(iterates) > 1 else p0
    return previous - iterates[-1]
