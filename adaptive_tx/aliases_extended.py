r"""The rest of the adaptive family as aliases: LAMB, Adadelta, Lion, AdaBelief, Yogi, Rprop, ADOPT,
Adan, AdEMAMix, LaProp, FTRL-Proximal, SM3 and NovoGrad (schedule-free AdamW is in
`adaptive_tx.averaging`, with the transformation it chains).

Chains of this library's primitives like `adaptive_tx.aliases` (whose conventions hold here), each
with the signature and defaults of its reference: optax's function of the same name
(``optax.contrib``'s for ADOPT and AdEMAMix), keras' ``Ftrl`` for FTRL,
the paper for LaProp.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from adaptive_tx.aliases import ScalarOrSchedule, _chain
from adaptive_tx.compat._common import is_off
from adaptive_tx.cover_set import scale_by_sm3
from adaptive_tx.delta import scale_by_adadelta
from adaptive_tx.ftrl_proximal import scale_by_ftrl
from adaptive_tx.layerwise import scale_by_novograd, scale_by_trust_ratio
from adaptive_tx.learning_rate import scale_by_learning_rate
from adaptive_tx.mixed_moments import scale_by_adan, scale_by_ademamix
from adaptive_tx.moments import scale_by_bias_corrected_moments
from adaptive_tx.normalized_momentum import quarter_power, scale_by_adopt, scale_by_laprop
from adaptive_tx.second_moments import scale_by_belief, scale_by_yogi
from adaptive_tx.sign import scale_by_lion, scale_by_rprop
from adaptive_tx.state_precision import StorageSpec
from adaptive_tx.weight_decay import Mask, add_decoupled_weight_decay


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    *,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LAMB: AdamW's step rescaled per leaf by the trust ratio :math:`\|\theta\| / \|\tilde u\|`.

    .. math::

       \tilde u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}
                    + \lambda_t \theta_{t-1}, \qquad
       u_t = -\eta_t\, \frac{\|\theta_{t-1}\|}{\|\tilde u_t\|}\, \tilde u_t \quad
       \text{(per leaf; ratio 1 where a norm is 0)}.

    ``scale_by_bias_corrected_moments``, ``add_decoupled_weight_decay``, `scale_by_trust_ratio`,
    then the learning rate; equals ``optax.lamb``. Each leaf (layer) moves by a step proportional
    to its own norm, whatever the scale of its gradient. A row-sparse leaf is refused (the trust
    ratio is a norm over the whole table).

    Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020, https://arxiv.org/abs/1904.00962

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nu_dtype: see `scale_by_bias_corrected_moments`.
      weight_decay, mask: see `add_decoupled_weight_decay`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.array([3.0, 4.0])
      >>> tx = lamb(0.1)
      >>> updates, _ = tx.update(jnp.array([1.0, -1.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # a step of 0.1 * |θ| = 0.5 along -sign(g)
      Array([2.6464467, 4.3535533], dtype=float32)
    """
    scaling = scale_by_bias_corrected_moments(b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    return optax.chain(
        scaling,
        add_decoupled_weight_decay(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask = None,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adadelta: :math:`\theta_t = \theta_{t-1} - \eta_t \sqrt{E[\Delta x^2]_{t-1} + \epsilon}\, g_t / \sqrt{E[g^2]_t + \epsilon}`.

    [coupled L2: ``add_decoupled_weight_decay`` before the scaling, :math:`g_t + \lambda_t
    \theta_{t-1}`], ``scale_by_adadelta``, then the learning rate (None: 1, Zeiler's method);
    equals ``optax.adadelta``.

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012,
    https://arxiv.org/abs/1212.5701

    Args:
      learning_rate: a non-negative number, a schedule, or None (1.0).
      rho, eps, nu_dtype: see `scale_by_adadelta`.
      weight_decay: λ of the L2 term added to the gradient before the scaling (as optax), >= 0.
      weight_decay_mask: where the L2 term applies (see `add_decoupled_weight_decay`).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.array([1.0])
      >>> tx = adadelta(1.0, rho=0.5, eps=1.0)
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # 1 - sqrt(1) / sqrt(0.5 * 2² + 1) * 2
      Array([-0.1547005], dtype=float32)
    """
    parts = []
    if not is_off(weight_decay):  # a Python 0 adds nothing: left out, as optax adds 0 * theta
        parts.append(add_decoupled_weight_decay(weight_decay, weight_decay_mask))
    parts.append(scale_by_adadelta(rho, eps, nu_dtype=nu_dtype))
    parts.append(scale_by_learning_rate(1.0 if learning_rate is None else learning_rate))
    return optax.chain(*parts)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: StorageSpec = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Mask = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Lion: :math:`\theta_t = \theta_{t-1} - \eta_t\,(\operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t) + \lambda_t \theta_{t-1})`.

    ``scale_by_lion``, ``add_decoupled_weight_decay``, then the learning rate; equals
    ``optax.lion``. Every coordinate moves by :math:`\eta_t` (plus the decay).

    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023,
    https://arxiv.org/abs/2302.06675

    Args:
      learning_rate: a non-negative number or a schedule (3-10 times smaller than AdamW's).
      b1, b2, mu_dtype: see `scale_by_lion`.
      weight_decay, mask: see `add_decoupled_weight_decay`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.array([1.0, 1.0])
      >>> tx = lion(0.1, weight_decay=0.0)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.01]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)
      Array([0.9, 1.1], dtype=float32)
    """
    scaling = scale_by_lion(b1, b2, mu_dtype)
    return _chain(scaling, learning_rate, weight_decay=weight_decay, mask=mask)


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaBelief: Adam with the variance around the first moment, :math:`s_t`, for :math:`v_t`.

    :math:`\theta_t = \theta_{t-1} - \eta_t\, \hat m_t / (\sqrt{\hat s_t} + \epsilon)`,
    :math:`s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}`.
    ``scale_by_belief`` then the learning rate; equals ``optax.adabelief``.

    Reference: Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
    Gradients", NeurIPS 2020, https://arxiv.org/abs/2010.07468

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, nesterov, mu_dtype, nu_dtype: see `scale_by_belief`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adabelief(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first step: -0.1 g / (0.9 |g|)
      Array([-0.1111,  0.1111], dtype=float32)
    """
    scaling = scale_by_belief(
        b1, b2, eps, eps_root, nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype
    )
    return _chain(scaling, learning_rate)


def yogi(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    *,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Yogi: Adam whose second moment moves additively, :math:`v_t = v_{t-1} - (1-\beta_2)\operatorname{sign}(v_{t-1} - g_t^2) g_t^2`.

    ``scale_by_yogi`` (moments starting at 1e-6, as optax) then the learning rate; equals
    ``optax.yogi``.

    Reference: Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018,
    https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, mu_dtype, nu_dtype: see `scale_by_yogi`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = yogi(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> updates.round(4)  # -0.1 * m_hat / (sqrt(v_hat) + 1e-3)
      Array([-0.1], dtype=float32)
    """
    scaling = scale_by_yogi(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return _chain(scaling, learning_rate)


def rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Rprop: :math:`\theta_t = \theta_{t-1} - \eta_t \operatorname{sign}(g_t)`, per-coordinate step sizes :math:`\eta_t`.

    ``scale_by_rprop`` then ``scale_by_learning_rate(1.0)`` (the sign flip, whose state makes the
    step sizes the effective learning rates); equals ``optax.rprop``. ``learning_rate`` is the
    initial step size :math:`\eta_0`, a number.

    Reference: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
    The RPROP Algorithm", ICNN 1993, https://doi.org/10.1109/ICNN.1993.298623

    Args:
      learning_rate, eta_minus, eta_plus, min_step_size, max_step_size: see `scale_by_rprop`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.array([1.0, 1.0])
      >>> tx = rprop(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.01]), tx.init(params))
      >>> optax.apply_updates(params, updates)
      Array([0.9, 1.1], dtype=float32)
    """
    scaling = scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size)
    return optax.chain(scaling, scale_by_learning_rate(1.0))


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: StorageSpec = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = quarter_power,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""ADOPT: :math:`\theta_t = \theta_{t-1} - \eta_t m_t`, a momentum of gradients normalized by
    :math:`v_{t-1}`.

    ``scale_by_adopt`` then the learning rate; equals ``optax.contrib.adopt`` (whose default
    ``clip_value_fn`` is ``count ** 0.25``, `quarter_power` here).

    Reference: Taniguchi et al., NeurIPS 2024, https://arxiv.org/abs/2411.02853

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, mu_dtype, nesterov, use_clipping, clip_value_fn, nu_dtype: see
        `scale_by_adopt`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adopt(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> updates  # the first step measures the second moment and does not move
      Array([-0.], dtype=float32)
    """
    scaling = scale_by_adopt(
        b1,
        b2,
        eps,
        mu_dtype,
        nesterov=nesterov,
        use_clipping=use_clipping,
        clip_value_fn=clip_value_fn,
        nu_dtype=nu_dtype,
    )
    return _chain(scaling, learning_rate)


def adan(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    *,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adan: :math:`\theta_t = \theta_{t-1} - \eta_t\big((\hat m_t + (1-\beta_2)\hat v_t) /
    (\sqrt{\hat n_t + \epsilon_{root}} + \epsilon) + \lambda \theta_{t-1}\big)`.

    ``scale_by_adan``, ``add_decoupled_weight_decay``, then the learning rate; equals
    ``optax.adan``.

    Reference: Xie et al., 2022, https://arxiv.org/abs/2208.06677

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, b3, eps, eps_root, mu_dtype, nu_dtype: see `scale_by_adan`.
      weight_decay, mask: see `add_decoupled_weight_decay`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adan(0.1, eps_root=0.0)
      >>> params = jnp.zeros(2)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(params), params)
      >>> updates  # the first step moves each coordinate by the learning rate
      Array([-0.1,  0.1], dtype=float32)
    """
    scaling = scale_by_adan(b1, b2, b3, eps, eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return _chain(scaling, learning_rate, weight_decay=weight_decay, mask=mask)


def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: StorageSpec = None,
    weight_decay: float = 0.0,
    mask: Mask = None,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdEMAMix: Adam with a slow momentum added, :math:`(\hat m^{(1)}_t + \alpha m^{(2)}_t) /
    (\sqrt{\hat\nu_t + \epsilon_{root}} + \epsilon)`, plus decoupled weight decay.

    ``scale_by_ademamix``, ``add_decoupled_weight_decay``, then the learning rate; equals
    ``optax.contrib.ademamix``.

    Reference: Pagliardini, Ablin & Grangier, 2024, https://arxiv.org/abs/2409.03137

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype: see `scale_by_ademamix`.
      weight_decay, mask: see `add_decoupled_weight_decay`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = ademamix(0.1, alpha=0.0)
      >>> params = jnp.zeros(1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(params), params)
      >>> updates.round(4)  # alpha = 0: Adam's first step
      Array([-0.1], dtype=float32)
    """
    scaling = scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype=nu_dtype)
    return _chain(scaling, learning_rate, weight_decay=weight_decay, mask=mask)


def laprop(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mu_dtype: StorageSpec = None,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LaProp: :math:`\theta_t = \theta_{t-1} - \eta_t m_t/(1-\beta_1^t)`, a momentum of
    RMS-normalized gradients.

    ``scale_by_laprop`` then the learning rate (optax has no twin; it equals
    ``optax.chain(optax.scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),
    optax.ema(b1), optax.scale_by_learning_rate(learning_rate))``). The paper's algorithm
    multiplies each normalized gradient by its step's rate before the momentum; with a constant
    rate the two are the same.

    Reference: Ziyin, Wang & Ueda, 2020, https://arxiv.org/abs/2002.04839

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, mu_dtype, nu_dtype: see `scale_by_laprop`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = laprop(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
      >>> updates  # the first step moves each coordinate by the learning rate
      Array([-0.1,  0.1], dtype=float32)
    """
    return _chain(scale_by_laprop(b1, b2, eps, mu_dtype, nu_dtype=nu_dtype), learning_rate)


def ftrl(
    learning_rate: float = 0.001,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    l1_regularization_strength: float = 0.0,
    l2_regularization_strength: float = 0.0,
    l2_shrinkage_regularization_strength: float = 0.0,
    beta: float = 0.0,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""FTRL-Proximal with L1, L2 and L2-shrinkage: `scale_by_ftrl` (keras' names and defaults).

    :math:`\theta_t = -(z_t - \mathrm{clip}(z_t, \pm\lambda_1)) / (n_t^{-p}/\alpha + 2\lambda_2
    + \beta/\alpha)`: exactly 0 while :math:`|z_t| \le \lambda_1` (optax has no FTRL; equals
    ``keras.optimizers.Ftrl``, whose other options `adaptive_tx.compat.keras.Ftrl` takes).

    Reference: McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013,
    https://research.google/pubs/ad-click-prediction-a-view-from-the-trenches/

    Args:
      learning_rate: :math:`\alpha` > 0, a number.
      learning_rate_power: :math:`p` <= 0.
      initial_accumulator_value: :math:`n_0` >= 0.
      l1_regularization_strength: :math:`\lambda_1` >= 0.
      l2_regularization_strength: :math:`\lambda_2` >= 0.
      l2_shrinkage_regularization_strength: :math:`\lambda_{2s}` >= 0.
      beta: :math:`\beta` >= 0.
      nu_dtype: the storage of :math:`n` and :math:`z` (see `scale_by_ftrl`).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = ftrl(0.1, l1_regularization_strength=1.0)
      >>> params = jnp.zeros(2)
      >>> updates, _ = tx.update(jnp.array([0.5, 3.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # |z| <= l1: exactly 0; -(3 - 1) / (sqrt(9.1) / 0.1)
      Array([ 0.        , -0.06629936], dtype=float32)
    """
    return optax.chain(
        scale_by_ftrl(
            learning_rate,
            learning_rate_power,
            initial_accumulator_value,
            l1_regularization_strength,
            l2_regularization_strength,
            l2_shrinkage_regularization_strength,
            beta,
            nu_dtype,
        )
    )


def sm3(
    learning_rate: ScalarOrSchedule, momentum: float = 0.9
) -> optax.GradientTransformationExtraArgs:
    r"""SM3: Adagrad with its accumulator kept as per-axis maxima, then momentum.

    .. math::

       v_t = g_t^2 + \min_i \mu^{(i)}_{t-1}, \quad
       m_t = \beta\, m_{t-1} + (1-\beta)\, g_t / \sqrt{v_t + 10^{-8}}, \quad
       \mu^{(i)}_t = \max_{\text{other axes}} v_t, \qquad u_t = -\eta_t\, m_t,

    with :math:`\beta` = ``momentum``: `scale_by_sm3` then the learning rate; equals
    ``optax.sm3``. An ``(m, n)`` matrix keeps :math:`m + n` accumulator entries instead of
    :math:`m n` (Adagrad's); the momentum is kept whole. A row-sparse gradient of a matrix is
    refused (its column maxima span the rows).

    Reference: Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS 2019,
    https://arxiv.org/abs/1901.11150

    Args:
      learning_rate: a non-negative number (or a schedule).
      momentum: :math:`\beta` in [0, 1].

    Example:
      >>> import jax.numpy as jnp
      >>> tx = sm3(0.1, momentum=0.0)
      >>> updates, _ = tx.update(jnp.array([[2.0, -0.5]]), tx.init(jnp.zeros((1, 2))))
      >>> updates  # -0.1 * g / |g| on the first step
      Array([[-0.1,  0.1]], dtype=float32)
    """
    return _chain(scale_by_sm3(b1=momentum), learning_rate)


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""NovoGrad: momentum of gradients normalized by their layer's RMS norm, plus weight decay.

    .. math::

       v_t = \beta_2 v_{t-1} + (1-\beta_2)\,\|g_t\|^2, \quad
       m_t = \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \epsilon_{root}} + \epsilon}
             + \lambda\theta_{t-1}, \qquad u_t = -\eta_t\, m_t,

    one :math:`v` per leaf (:math:`v_1 = \|g_1\|^2`, :math:`m_1` without the momentum):
    `scale_by_novograd` then the learning rate; equals ``optax.novograd``. Its second moment costs
    one number per layer; a row-sparse leaf is refused (the norm is the whole leaf's).

    Reference: Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
    Training of Deep Networks", 2019, https://arxiv.org/abs/1905.11286

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, weight_decay: see `scale_by_novograd`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = novograd(0.1)
      >>> params = jnp.zeros(2)
      >>> updates, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
      >>> updates  # -0.1 * g / |g| on the first step
      Array([-0.06, -0.08], dtype=float32)
    """
    scaling = scale_by_novograd(b1, b2, eps, eps_root, weight_decay)
    return _chain(scaling, learning_rate)
