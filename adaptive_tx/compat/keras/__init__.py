r"""``keras.optimizers`` (Keras 3) presets: keras' names, keyword arguments and defaults, as Optax transformations.

Each factory returns an ``optax.chain`` of this library's primitives that reproduces the Keras 3
optimizer of the same name step for step (checked against keras with ``KERAS_BACKEND=jax``, to
1e-4 relative over 100 steps, in ``tests/test_compat_keras.py``):

.. code-block:: text

   [clipnorm | clipvalue | global_clipnorm] → adaptive scaling → learning rate
   → [RMSprop momentum: sparse.trace] → [weight_decay: θ ← θ - η λ θ]

Keras clips each gradient first (``clipnorm``: each variable's gradient to that L2 norm;
``global_clipnorm``: all of them together; ``clipvalue``: elementwise), and applies
``weight_decay`` to the variables themselves, outside any momentum
(`add_decoupled_weight_decay` with ``learning_rate``), so ``update`` needs the parameters when it
is set. ``learning_rate`` is a number or an optax schedule of the step count (0, 1, 2, ...), as a
keras ``LearningRateSchedule`` sees ``optimizer.iterations``. ``name`` and, without ``use_ema``,
``ema_momentum`` and ``ema_overwrite_frequency`` do not change the math and are ignored; the
options that do and that these presets do not reproduce raise: ``use_ema=True`` (keep
an EMA of the parameters yourself, e.g. with ``optax.ema`` on the parameters),
``loss_scale_factor`` and ``gradient_accumulation_steps`` (wrap the preset in
``optax.MultiSteps``). There is no ``**kwargs``: an unknown keyword (keras' legacy ``decay``
among them) is a TypeError, and ``optax.inject_hyperparams`` can wrap the presets. Keras'
per-variable ``exclude_from_weight_decay`` is a method, not a keyword: build the chain from the
primitives with ``optax.masked`` around the weight decay for that.

``Adafactor``, ``Ftrl`` and ``Lamb`` read the parameters (their RMS, FTRL's linear term, the trust
ratio's norm), so with ``weight_decay`` their step is computed at the decayed parameters, as keras
computes it (`decay_before_step`). Every convention is
tabulated in ``docs/conventions.md``.
"""

from __future__ import annotations

import optax

from adaptive_tx.compat.keras._common import (
    _chain,
    _check_betas,
    _float32,
    clip_each_by_norm,
    decay_before_step,
)
from adaptive_tx.compat.keras._others import (
    Adadelta,
    Adafactor,
    Adagrad,
    Ftrl,
    Lion,
    RMSprop,
    adafactor_scaling,
    relative_step_size,
)
from adaptive_tx.layerwise import scale_by_trust_ratio
from adaptive_tx.moments import scale_by_bias_corrected_moments, scale_by_inf_norm_moments

__all__ = (
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Ftrl",
    "Lamb",
    "Lion",
    "Nadam",
    "RMSprop",
    "adafactor_scaling",
    "clip_each_by_norm",
    "decay_before_step",
    "relative_step_size",
)


def Adam(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``keras.optimizers.Adam``: the ε-hat form, AMSGrad's maximum over the raw :math:`v_t`.

    .. math::

       \alpha_t = \eta_t \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}, \quad
       \theta_t = \theta_{t-1} - \alpha_t \frac{m_t}{\sqrt{v_t} + \epsilon},

    with :math:`m_t, v_t` as in Adam; ``amsgrad`` uses :math:`\max_{\tau \le t} v_\tau` in place of
    :math:`v_t`. Equivalently ε is :math:`\epsilon/\sqrt{1-\beta_2^t}` next to
    :math:`\sqrt{\hat v_t}` (optax and torch add ε itself). `scale_by_bias_corrected_moments`
    with ``eps_hat=True, amsgrad_raw_max=True``.

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, section 2,
    https://arxiv.org/abs/1412.6980 ; Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond",
    2018, https://arxiv.org/abs/1904.09237

    Args:
      learning_rate: η, a non-negative number or an optax schedule.
      beta_1, beta_2: the moments' decay rates, in [0, 1).
      epsilon: >= 0, added to :math:`\sqrt{v_t}`.
      amsgrad: use the running maximum of the second moment.
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Adam(learning_rate=0.1)
      >>> params = jnp.array([1.0, 1.0])
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(params), params)
      >>> optax.apply_updates(params, updates).round(4)  # the first step moves each coordinate by lr
      Array([0.9, 1.1], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    _check_betas(beta_1, beta_2, epsilon)
    scaling = scale_by_bias_corrected_moments(
        b1=beta_1, b2=beta_2, eps=epsilon, amsgrad=amsgrad, eps_hat=True, amsgrad_raw_max=True
    )
    return _chain(
        "Adam",
        scaling,
        learning_rate,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def AdamW(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    weight_decay: float = 0.004,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``keras.optimizers.AdamW``: keras' `Adam` with a weight decay, λ = 0.004 by default.

    .. math::

       \theta_t = \theta_{t-1} - \eta_t \lambda \theta_{t-1}
                  - \eta_t \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \frac{m_t}{\sqrt{v_t} + \epsilon}.

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
    https://arxiv.org/abs/1711.05101

    Args:
      learning_rate, beta_1, beta_2, epsilon, amsgrad: see `Adam`.
      weight_decay: λ >= 0 (None is an error, as in keras).
      clipnorm, clipvalue, global_clipnorm: keras' common options: at most one gradient clipping.
      use_ema, ema_momentum, ema_overwrite_frequency, name: keras' common options: ignored
        (``use_ema=True`` raises).
      loss_scale_factor, gradient_accumulation_steps: keras' common options: not reproduced
        (a value that would change the math raises).

    Returns:
      An `optax.GradientTransformationExtraArgs`; ``update`` needs the parameters.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = AdamW(learning_rate=0.1, weight_decay=0.5)
      >>> params = jnp.array([1.0])
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # 1 - 0.1 * 0.5 * 1 - 0.1
      Array([0.85], dtype=float32)
    """
    if weight_decay is None:
        raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
    return Adam(
        learning_rate,
        beta_1,
        beta_2,
        epsilon,
        amsgrad,
        weight_decay,
        clipnorm,
        clipvalue,
        global_clipnorm,
        use_ema,
        ema_momentum,
        ema_overwrite_frequency,
        loss_scale_factor,
        gradient_accumulation_steps,
        name,
    )


def Adamax(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``keras.optimizers.Adamax``: ε added to the infinity norm in the denominator.

    .. math::

       u_t = \max(\beta_2 u_{t-1}, |g_t|), \quad
       \theta_t = \theta_{t-1} - \frac{\eta_t}{1-\beta_1^t} \frac{m_t}{u_t + \epsilon}

    (optax and torch: :math:`u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon)` and :math:`m_t/u_t`).
    `scale_by_inf_norm_moments` with ``eps_in_max=False``.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.1,
    https://arxiv.org/abs/1412.6980

    Args:
      learning_rate: η, a non-negative number or an optax schedule.
      beta_1, beta_2: the decay rates, in [0, 1).
      epsilon: >= 0, added to :math:`u_t`.
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = Adamax(learning_rate=0.1, epsilon=1.0)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> updates  # -0.1 / (1 - 0.9) * 0.3 / (3 + 1)
      Array([-0.075], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    _check_betas(beta_1, beta_2, epsilon)
    scaling = scale_by_inf_norm_moments(b1=beta_1, b2=beta_2, eps=epsilon, eps_in_max=False)
    return _chain(
        "Adamax",
        scaling,
        learning_rate,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def Nadam(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``keras.optimizers.Nadam``: Dozat's momentum schedule with :math:`\mu_t = \beta_1(1 - \frac12 0.96^t)`.

    .. math::

       \theta_t = \theta_{t-1} - \eta_t
       \frac{\frac{\mu_{t+1}}{1-\Pi_{t+1}} m_t + \frac{1-\mu_t}{1-\Pi_t} g_t}
            {\sqrt{v_t/(1-\beta_2^t)} + \epsilon}, \qquad \Pi_t = \prod_{i \le t} \mu_i,

    torch's NAdam formula with ``momentum_decay`` ψ = 1 (torch's default is 0.004: keras 3's
    schedule reaches :math:`\beta_1` within ~100 steps); ε is added to :math:`\sqrt{\hat v_t}`
    (not keras Adam's ε-hat). `scale_by_bias_corrected_moments` with ``nesterov=True,
    momentum_decay=1``, given the betas rounded to float32 as keras' Nadam casts them before
    computing :math:`1-\beta` (its Adam does not; at β2 = 0.99999 the two differ by 1.4e-3).

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016,
    https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ

    Args:
      learning_rate: η, a non-negative number or an optax schedule.
      beta_1, beta_2: the moments' decay rates, in [0, 1).
      epsilon: >= 0, added to :math:`\sqrt{\hat v_t}`.
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = Nadam(learning_rate=0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> updates  # -0.1 * (mu_2 m_1 / (1 - mu_1 mu_2) + g_1) / 3, mu_t = 0.9 (1 - 0.96**t / 2)
      Array([-0.10628], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    _check_betas(beta_1, beta_2, epsilon)
    # keras' Nadam casts the betas to float32 before computing 1 - beta (its Adam does not).
    scaling = scale_by_bias_corrected_moments(
        b1=_float32(beta_1), b2=_float32(beta_2), eps=epsilon, nesterov=True, momentum_decay=1.0
    )
    return _chain(
        "Nadam",
        scaling,
        learning_rate,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def Lamb(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``keras.optimizers.Lamb``: Adam's step (ε outside the root) times the per-leaf trust ratio.

    .. math::

       u = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \qquad
       \theta_t = \theta_{t-1} - \eta_t\, \frac{\|\theta_{t-1}\|}{\|u\|}\, u
       \quad (\text{ratio 1 where a norm is 0}).

    `scale_by_bias_corrected_moments`, `adaptive_tx.scale_by_trust_ratio`, then the learning rate.
    Keras' ``weight_decay`` is applied to the variables first, outside the ratio (not optax's
    :math:`\lambda\theta` inside it), and the ratio reads the decayed parameters
    (`decay_before_step`). Row-sparse leaves are refused (the ratio is a norm over the leaf).

    Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020, https://arxiv.org/abs/1904.00962

    Args:
      learning_rate: η, a non-negative number or an optax schedule.
      beta_1: β1 in [0, 1).
      beta_2: β2 in [0, 1).
      epsilon: ε >= 0, outside the root.
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`; ``update`` needs the parameters.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Lamb(learning_rate=0.1)
      >>> params = jnp.array([3.0, 4.0])
      >>> updates, _ = tx.update(jnp.array([1.0, -1.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # a step of 0.1 * |θ| = 0.5
      Array([2.6464467, 4.3535533], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    _check_betas(beta_1, beta_2, epsilon)
    scaling = optax.chain(
        scale_by_bias_corrected_moments(b1=beta_1, b2=beta_2, eps=epsilon),
        scale_by_trust_ratio(),
    )
    return _chain(
        "Lamb",
        scaling,
        learning_rate,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps,
        reads_params=True,
    )
