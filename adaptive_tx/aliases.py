r"""Optimizers as chains of this library's primitives, with optax's exact signatures and defaults.

Each alias is ``optax.chain(<adaptive scaling>, [decoupled weight decay], learning rate
[, momentum])`` and reproduces the optax optimizer of the same name; the math of each lives in
the primitive's docstring. The step is :math:`\theta_t = \theta_{t-1} + u_t` with
``optax.apply_updates``.

Beyond optax's arguments, every alias takes keyword-only ``mu_dtype`` / ``nu_dtype`` (where optax
has no such argument): how the moments are stored (a float dtype, ``"bfloat16_sr"``,
``"int8_blockwise"``, `adaptive_tx.Factored`, `adaptive_tx.BlockMean`; see
`adaptive_tx.state_precision`). The arithmetic stays float32.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from adaptive_tx import _validate, sparse
from adaptive_tx.cover_set import scale_by_sm3
from adaptive_tx.ema_of_squares import scale_by_ema_of_squares
from adaptive_tx.factored import scale_by_factored_ema_of_squares
from adaptive_tx.ftrl_proximal import scale_by_ftrl
from adaptive_tx.layerwise import scale_by_novograd, scale_by_trust_ratio
from adaptive_tx.learning_rate import scale_by_learning_rate
from adaptive_tx.mixed_moments import scale_by_adan, scale_by_ademamix
from adaptive_tx.moments import (
    scale_by_bias_corrected_moments,
    scale_by_inf_norm_moments,
    scale_by_rectified_moments,
)
from adaptive_tx.normalized_momentum import quarter_power, scale_by_adopt, scale_by_laprop
from adaptive_tx.state_precision import StorageSpec
from adaptive_tx.sum_of_squares import scale_by_rowwise_sum_of_squares, scale_by_sum_of_squares
from adaptive_tx.weight_decay import Mask, add_decoupled_weight_decay

ScalarOrSchedule = optax.ScalarOrSchedule


def _chain(scaling, learning_rate, weight_decay=None, mask=None, momentum=None, nesterov=False):
    """scaling → [weight decay] → learning rate → [momentum], the order optax uses."""
    parts = [scaling]
    if weight_decay is not None:
        parts.append(add_decoupled_weight_decay(weight_decay, mask))
    parts.append(scale_by_learning_rate(learning_rate))
    _validate.check_flag_needs("nesterov", nesterov, "momentum", momentum)
    if momentum is not None:
        momentum = _validate.check_unit_interval("momentum", momentum)
        # optax.trace on dense leaves; lazy momentum on the touched rows of row-sparse ones.
        parts.append(sparse.trace(decay=momentum, nesterov=nesterov))
    return optax.chain(*parts)


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adagrad: :math:`\theta_t = \theta_{t-1} - \eta_t\, g_t / \sqrt{G_t + \epsilon}`.

    ``scale_by_sum_of_squares`` then the learning rate; equals ``optax.adagrad``.

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011, https://jmlr.org/papers/v12/duchi11a.html

    Args:
      learning_rate: a non-negative number or a schedule.
      initial_accumulator_value, eps, nu_dtype: see `scale_by_sum_of_squares`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.array([1.0, 1.0])
      >>> tx = adagrad(0.1, initial_accumulator_value=0.0, eps=0.0)
      >>> updates, _ = tx.update(jnp.array([2.0, -0.5]), tx.init(params))
      >>> optax.apply_updates(params, updates)
      Array([0.9, 1.1], dtype=float32)
    """
    scaling = scale_by_sum_of_squares(initial_accumulator_value, eps, nu_dtype=nu_dtype)
    return _chain(scaling, learning_rate)


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSProp: :math:`\theta_t = \theta_{t-1} - \eta_t\, g_t / \sqrt{\nu_t + \epsilon}`.

    ``scale_by_ema_of_squares`` then the learning rate, then (if ``momentum`` is set) a momentum trace
    of the scaled steps, :math:`b_t = \text{momentum}\, b_{t-1} + \eta_t u_t` (``nesterov``:
    :math:`\eta_t u_t + \text{momentum}\, b_t`); equals ``optax.rmsprop``.

    References: Hinton, lecture 6e, 2012,
    https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf ; centered: Graves 2013,
    https://arxiv.org/abs/1308.0850

    Args:
      learning_rate: a non-negative number or a schedule.
      decay, eps, initial_scale, eps_in_sqrt, centered, bias_correction, mu_dtype, nu_dtype: see
        `scale_by_ema_of_squares`.
      momentum: the momentum decay in [0, 1), or None for no momentum.
      nesterov: Nesterov momentum (only with ``momentum``: without, it raises).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.array([1.0])
      >>> tx = rmsprop(0.1, decay=0.75, eps=0.0)
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(params))
      >>> optax.apply_updates(params, updates)  # 1 - 0.1 * 2 / sqrt(0.25 * 4)
      Array([0.8], dtype=float32)
    """
    scaling = scale_by_ema_of_squares(
        decay=decay,
        eps=eps,
        initial_scale=initial_scale,
        eps_in_sqrt=eps_in_sqrt,
        centered=centered,
        bias_correction=bias_correction,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
    return _chain(scaling, learning_rate, momentum=momentum, nesterov=nesterov)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: StorageSpec = None,
    *,
    nesterov: bool = False,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam: :math:`\theta_t = \theta_{t-1} - \eta_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)`.

    ``scale_by_bias_corrected_moments`` then the learning rate; equals ``optax.adam``.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014,
    https://arxiv.org/abs/1412.6980

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: see
        `scale_by_bias_corrected_moments`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.array([1.0, 1.0])
      >>> tx = adam(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.01]), tx.init(params))
      >>> optax.apply_updates(params, updates).round(4)  # the first step moves each coordinate by lr
      Array([0.9, 1.1], dtype=float32)
    """
    scaling = scale_by_bias_corrected_moments(b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov)
    return _chain(scaling, learning_rate)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: StorageSpec = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask = None,
    *,
    nesterov: bool = False,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW: Adam's step plus decoupled weight decay, :math:`-\eta_t(u^{Adam}_t + \lambda \theta_{t-1})`.

    ``scale_by_bias_corrected_moments``, ``add_decoupled_weight_decay``, then the learning rate;
    equals ``optax.adamw``.

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
    https://arxiv.org/abs/1711.05101

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: see
        `scale_by_bias_corrected_moments`.
      weight_decay, mask: see `add_decoupled_weight_decay`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.array([1.0])
      >>> tx = adamw(0.1, weight_decay=0.5)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # 1 - 0.1 * (1 + 0.5 * 1)
      Array([0.85], dtype=float32)
    """
    scaling = scale_by_bias_corrected_moments(b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov)
    return _chain(scaling, learning_rate, weight_decay=weight_decay, mask=mask)


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: StorageSpec = None,
    *,
    nesterov: bool = True,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdam: Adam with a Nesterov look-ahead first moment (``adam(..., nesterov=True)``).

    :math:`\hat m_t = \beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`; equals
    ``optax.nadam``.

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016,
    https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: see
        `scale_by_bias_corrected_moments`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = nadam(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> updates  # -0.1 * (0.9 * 0.3 / 0.19 + 0.1 * 3 / 0.1) / sqrt(9)
      Array([-0.14737], dtype=float32)
    """
    return adam(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype
    )


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: StorageSpec = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask = None,
    *,
    nesterov: bool = True,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdamW: NAdam with decoupled weight decay (``adamw(..., nesterov=True)``).

    Equals ``optax.nadamw``.

    References: Dozat 2016, https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ ; Loshchilov &
    Hutter 2019, https://arxiv.org/abs/1711.05101

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: see
        `scale_by_bias_corrected_moments`.
      weight_decay, mask: see `add_decoupled_weight_decay`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = nadamw(0.1, weight_decay=0.0)
      >>> params = jnp.zeros(1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(params), params)
      >>> updates
      Array([-0.14736746], dtype=float32)
    """
    return adamw(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        weight_decay,
        mask,
        nesterov=nesterov,
        nu_dtype=nu_dtype,
    )


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: StorageSpec = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AMSGrad: Adam whose denominator uses the running maximum :math:`\max_{\tau\le t} \hat v_\tau`.

    ``scale_by_bias_corrected_moments(amsgrad=True)`` then the learning rate; equals
    ``optax.amsgrad`` (the maximum of the bias-corrected :math:`\hat v_t`).

    Reference: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018,
    https://arxiv.org/abs/1904.09237

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu, nu_dtype: see
        `scale_by_bias_corrected_moments`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = amsgrad(0.1)
      >>> state = tx.init(jnp.zeros(1))
      >>> _, state = tx.update(jnp.array([10.0]), state)
      >>> updates, state = tx.update(jnp.array([0.0]), state)
      >>> updates  # the maximum keeps the large first second moment
      Array([-0.04737], dtype=float32)
    """
    scaling = scale_by_bias_corrected_moments(
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        amsgrad=True,
        bias_correction_mu=bias_correction_mu,
        bias_correction_nu=bias_correction_nu,
    )
    return _chain(scaling, learning_rate)


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adamax: :math:`\theta_t = \theta_{t-1} - \eta_t\, m_t / ((1-\beta_1^t)\, u_t)`, with :math:`u_t` an infinity norm.

    ``scale_by_inf_norm_moments`` then the learning rate; equals ``optax.adamax``.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.1,
    https://arxiv.org/abs/1412.6980

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, mu_dtype, nu_dtype: see `scale_by_inf_norm_moments`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adamax(0.1, eps=0.0)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
      >>> updates
      Array([-0.1,  0.1], dtype=float32)
    """
    scaling = scale_by_inf_norm_moments(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return _chain(scaling, learning_rate)


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask = None,
    *,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamaxW: Adamax with decoupled weight decay.

    ``scale_by_inf_norm_moments``, ``add_decoupled_weight_decay``, then the learning rate; equals
    ``optax.adamaxw``.

    References: Kingma & Ba 2014, https://arxiv.org/abs/1412.6980 ; Loshchilov & Hutter 2019,
    https://arxiv.org/abs/1711.05101

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, mu_dtype, nu_dtype: see `scale_by_inf_norm_moments`.
      weight_decay, mask: see `add_decoupled_weight_decay`.

    Example:
      >>> import jax.numpy as jnp
      >>> params = jnp.array([1.0])
      >>> tx = adamaxw(0.1, eps=0.0, weight_decay=0.5)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(params), params)
      >>> updates  # -0.1 * (1 + 0.5 * 1)
      Array([-0.15], dtype=float32)
    """
    scaling = scale_by_inf_norm_moments(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return _chain(scaling, learning_rate, weight_decay=weight_decay, mask=mask)


def radam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: StorageSpec = None,
    nu_dtype: StorageSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""RAdam: Adam whose adaptive step is rectified by :math:`r_t` and off until :math:`\rho_t \ge` threshold.

    ``scale_by_rectified_moments`` then the learning rate; equals ``optax.radam``.

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
    https://arxiv.org/abs/1908.03265

    Args:
      learning_rate: a non-negative number or a schedule.
      b1, b2, eps, eps_root, threshold, nesterov, mu_dtype, nu_dtype: see
        `scale_by_rectified_moments`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = radam(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> updates  # the first steps are SGD with (bias-corrected) momentum
      Array([-0.3], dtype=float32)
    """
    scaling = scale_by_rectified_moments(
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        threshold=threshold,
        nesterov=nesterov,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
    return _chain(scaling, learning_rate)


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


def rowwise_adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-7,
) -> optax.GradientTransformationExtraArgs:
    r"""Row-wise Adagrad: :math:`\theta_{t,r} = \theta_{t-1,r} - \eta_t\, g_{t,r} / \sqrt{G_{t,r} + \epsilon}`.

    ``scale_by_rowwise_sum_of_squares`` (one accumulator per row, the running sum of the row's
    mean squared gradient) then the learning rate. Not in optax; FBGEMM's ``rowwise_adagrad``
    for embedding tables (ε inside the root here, see the primitive).

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 2011, https://jmlr.org/papers/v12/duchi11a.html ; FBGEMM,
    https://github.com/pytorch/FBGEMM

    Args:
      learning_rate: a non-negative number or a schedule.
      initial_accumulator_value, eps: see `scale_by_rowwise_sum_of_squares`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = jnp.ones((2, 2))
      >>> tx = rowwise_adagrad(0.1, eps=0.0)
      >>> updates, _ = tx.update(jnp.array([[2.0, 2.0], [0.0, 0.0]]), tx.init(params))
      >>> optax.apply_updates(params, updates)
      Array([[0.9, 0.9],
             [1. , 1. ]], dtype=float32)
    """
    return _chain(scale_by_rowwise_sum_of_squares(initial_accumulator_value, eps), learning_rate)


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: DTypeLike = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Mask = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adafactor: a factored second moment, update clipping and relative step sizes.

    ``scale_by_factored_ema_of_squares``, then (each optional) ``optax.clip_by_block_rms``, the
    learning rate, ``optax.scale_by_param_block_rms`` (steps relative to each parameter's RMS),
    momentum (``optax.ema``), ``add_decoupled_weight_decay``, and a sign flip; equals
    ``optax.adafactor``. The second moment of an :math:`m \times n` matrix takes :math:`m + n`
    numbers.

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    ICML 2018, https://arxiv.org/abs/1804.04235

    Args:
      learning_rate: a non-negative number, a schedule, or None for no learning-rate factor.
      min_dim_size_to_factor, decay_rate, eps, factored: see
        `scale_by_factored_ema_of_squares` (``decay_offset`` is its ``step_offset``, ``eps`` its
        ``epsilon``).
      decay_offset: the step the decay schedule starts from (for fine-tuning).
      multiply_by_parameter_scale: scale each step by the parameter's block RMS.
      clipping_threshold: clip each leaf's update to this RMS (> 0; 1 in the paper), or None.
      momentum: the decay of an (unbiased-free) EMA of the steps, or None for no momentum.
      dtype_momentum: the dtype of the momentum buffer.
      weight_decay_rate: decay added to the step after the learning rate, or None.
      weight_decay_mask: where the weight decay applies (see `add_decoupled_weight_decay`).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adafactor(0.1, multiply_by_parameter_scale=False)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
      >>> updates  # the first step moves each coordinate by the learning rate
      Array([-0.1,  0.1], dtype=float32)
    """
    if clipping_threshold is not None:
        clipping_threshold = _validate.check_positive("clipping_threshold", clipping_threshold)
    parts = [
        scale_by_factored_ema_of_squares(
            factored, decay_rate, decay_offset, min_dim_size_to_factor, eps
        )
    ]
    if clipping_threshold is not None:
        parts.append(optax.clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        parts.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        parts.append(optax.scale_by_param_block_rms())
    if momentum is not None:
        momentum = _validate.check_unit_interval("momentum", momentum)
        parts.append(optax.ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        parts.append(add_decoupled_weight_decay(weight_decay_rate, weight_decay_mask))
    parts.append(optax.scale(-1))
    return optax.chain(*parts)


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
