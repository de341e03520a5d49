r"""The ``keras.optimizers`` presets outside the Adam family: Adagrad, Adadelta, RMSprop, Lion, Ftrl,
Adafactor (see `adaptive_tx.compat.keras` for the conventions they share)."""


from __future__ import annotations

import jax.numpy as jnp
import optax

from adaptive_tx import _validate
from adaptive_tx.compat.keras._common import (
    _chain,
)
from adaptive_tx.delta import scale_by_adadelta
from adaptive_tx.ema_of_squares import scale_by_ema_of_squares
from adaptive_tx.factored import scale_by_factored_ema_of_squares
from adaptive_tx.ftrl_proximal import scale_by_ftrl
from adaptive_tx.sign import scale_by_lion
from adaptive_tx.sum_of_squares import scale_by_sum_of_squares


def Adagrad(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    initial_accumulator_value: float = 0.1,
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
    r"""``keras.optimizers.Adagrad``: ε inside the root (as optax), :math:`G_0 = 0.1`.

    .. math::

       G_t = G_{t-1} + g_t^2, \quad \theta_t = \theta_{t-1} - \eta_t \frac{g_t}{\sqrt{G_t + \epsilon}}.

    `scale_by_sum_of_squares`, the same rule as ``optax.adagrad``.

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011, https://jmlr.org/papers/v12/duchi11a.html

    Args:
      learning_rate: η, a non-negative number or an optax schedule.
      initial_accumulator_value: :math:`G_0` >= 0.
      epsilon: >= 0, added inside the root.
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Adagrad(learning_rate=0.1, initial_accumulator_value=0.0, epsilon=0.0)
      >>> params = jnp.array([1.0, 1.0])
      >>> updates, _ = tx.update(jnp.array([2.0, -0.5]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)
      Array([0.9, 1.1], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    _validate.check_non_negative("epsilon", epsilon)
    scaling = scale_by_sum_of_squares(initial_accumulator_value, epsilon)
    return _chain(
        "Adagrad",
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


def Adadelta(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    rho: float = 0.95,
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
    r"""``keras.optimizers.Adadelta``: optax's arithmetic with keras' defaults (ρ = 0.95, ε = 1e-7, η = 1e-3).

    .. math::

       E[g^2]_t = \rho E[g^2]_{t-1} + (1-\rho) g_t^2, \quad
       \Delta_t = \frac{\sqrt{E[\Delta^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}} g_t, \quad
       \theta_t = \theta_{t-1} - \eta_t \Delta_t,

    :math:`E[\Delta^2]_t = \rho E[\Delta^2]_{t-1} + (1-\rho) \Delta_t^2`. `scale_by_adadelta`.
    keras' default η = 1e-3 makes the steps 1000 times smaller than Zeiler's (η = 1, torch's
    default).

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012,
    https://arxiv.org/abs/1212.5701

    Args:
      learning_rate: η, a non-negative number or an optax schedule.
      rho: :math:`\rho` in [0, 1).
      epsilon: ε > 0, inside both square roots.
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = Adadelta(learning_rate=1.0, rho=0.5, epsilon=1.0)
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> updates  # -sqrt(1) / sqrt(0.5 * 2² + 1) * 2
      Array([-1.1547005], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    scaling = scale_by_adadelta(rho, epsilon)
    return _chain(
        "Adadelta",
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


def Lion(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
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
    r"""``keras.optimizers.Lion``: optax's arithmetic, no weight decay by default.

    .. math::

       \theta_t = \theta_{t-1} - \eta_t \operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t),
       \quad m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t,

    then keras' decoupled ``weight_decay`` (optax's ``lion`` decays by 1e-3 by default, keras by
    nothing). `scale_by_lion`.

    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023,
    https://arxiv.org/abs/2302.06675

    Args:
      learning_rate: η, a non-negative number or an optax schedule.
      beta_1: :math:`\beta_1` in [0, 1) (keras also accepts 1: the sign of the momentum alone,
        which `scale_by_lion` refuses).
      beta_2: :math:`\beta_2` in [0, 1).
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = Lion(learning_rate=0.1)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
      >>> updates
      Array([-0.1,  0.1], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    scaling = scale_by_lion(beta_1, beta_2)
    return _chain(
        "Lion",
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


def RMSprop(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    centered: bool = False,
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
    r"""``keras.optimizers.RMSprop``: ε inside the root, momentum on the steps after the rate.

    .. math::

       v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
       b_t = \text{momentum}\; b_{t-1} + \eta_t \frac{g_t}{\sqrt{\bar v_t + \epsilon}}, \quad
       \theta_t = \theta_{t-1} - b_t,

    :math:`\bar v_t = v_t`, or :math:`v_t - \mu_t^2` with ``centered``. `scale_by_ema_of_squares`,
    the learning rate, then ``optax.trace``: ``optax.rmsprop``'s arithmetic (torch puts ε outside
    the root and the rate after the momentum).

    References: Hinton, lecture 6e, 2012,
    https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf ; centered: Graves,
    2013, https://arxiv.org/abs/1308.0850

    Args:
      learning_rate: η, a non-negative number or an optax schedule.
      rho: the decay of the averages, in [0, 1).
      momentum: >= 0 (0: no momentum buffer).
      epsilon: >= 0, added inside the root.
      centered: divide by the estimated standard deviation instead of the RMS.
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = RMSprop(learning_rate=0.01, rho=0.75, epsilon=3.0)
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> updates  # -0.01 * 2 / sqrt(0.25 * 4 + 3)
      Array([-0.01], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    _validate.check_unit_interval("rho", rho)
    _validate.check_non_negative("epsilon", epsilon)
    _validate.check_non_negative("momentum", momentum)
    scaling = scale_by_ema_of_squares(decay=rho, eps=epsilon, centered=centered)
    return _chain(
        "RMSprop",
        scaling,
        learning_rate,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps,
        momentum=momentum,
    )


def Ftrl(
    learning_rate: float = 0.001,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    l1_regularization_strength: float = 0.0,
    l2_regularization_strength: float = 0.0,
    l2_shrinkage_regularization_strength: float = 0.0,
    beta: float = 0.0,
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
    r"""``keras.optimizers.Ftrl``: FTRL-Proximal with L1, L2 and L2-shrinkage (`scale_by_ftrl`).

    .. math::

       \theta_t = -\frac{z_t - \mathrm{clip}(z_t, -\lambda_1, \lambda_1)}
                         {n_t^{-p}/\eta + 2\lambda_2 + \beta/\eta},

    exactly 0 while :math:`|z_t| \le \lambda_1` (see `scale_by_ftrl` for :math:`n_t, z_t`). The
    learning rate is inside the closed form: a number here (keras also takes a schedule, which
    raises ``TypeError``). With ``weight_decay`` the step reads the decayed parameters, as keras
    applies the decay to the variables first (`decay_before_step`).

    Reference: McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013,
    https://research.google/pubs/ad-click-prediction-a-view-from-the-trenches/

    Args:
      learning_rate: η > 0, a number.
      learning_rate_power: :math:`p` <= 0.
      initial_accumulator_value: :math:`n_0` >= 0.
      l1_regularization_strength: :math:`\lambda_1` >= 0.
      l2_regularization_strength: :math:`\lambda_2` >= 0.
      l2_shrinkage_regularization_strength: :math:`\lambda_{2s}` >= 0 (see `scale_by_ftrl`).
      beta: :math:`\beta` >= 0.
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`; ``update`` needs the parameters.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Ftrl(learning_rate=0.1, l1_regularization_strength=1.0)
      >>> params = jnp.zeros(2)
      >>> updates, _ = tx.update(jnp.array([0.5, 3.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)
      Array([ 0.        , -0.06629936], dtype=float32)
    """
    del ema_momentum, ema_overwrite_frequency, name
    scaling = scale_by_ftrl(
        learning_rate,
        learning_rate_power,
        initial_accumulator_value,
        l1_regularization_strength,
        l2_regularization_strength,
        l2_shrinkage_regularization_strength,
        beta,
    )
    return _chain(
        "Ftrl",
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
        rate_inside=True,
    )


def relative_step_size(learning_rate: optax.ScalarOrSchedule) -> optax.Schedule:
    r"""keras' Adafactor step size :math:`\rho_t = \min(\eta_t, 1/\sqrt{t})`, a schedule.

    The count is 0, 1, 2, ... (t = count + 1), as ``scale_by_learning_rate`` passes it; η is a
    number or a schedule of the same count. Computed in float32 (keras' arithmetic).

    Example:
      >>> [float(relative_step_size(0.5)(count)) for count in (0, 3, 15)]
      [0.5, 0.5, 0.25]
    """

    def rate(count):
        value = learning_rate(count) if callable(learning_rate) else learning_rate
        t = jnp.asarray(count, jnp.float32) + 1
        return jnp.minimum(jnp.asarray(value, jnp.float32), 1 / jnp.sqrt(t))

    return rate


def adafactor_scaling(
    beta_2_decay: float,
    clip_threshold: float,
    epsilon_2: float,
    *,
    eps_grad_sq: float = 0.0,
) -> optax.GradientTransformation:
    r"""keras' Adafactor before the step size: :math:`\max(\epsilon_2,
    \mathrm{RMS}(\theta))\, \hat u_t`.

    `scale_by_factored_ema_of_squares` (decay :math:`1 - t^{\mathtt{beta\_2\_decay}}`, every
    matrix factored on its last two axes), then ``optax.clip_by_block_rms`` (:math:`\hat u =
    u / \max(1, \mathrm{RMS}(u)/d)`) and ``optax.scale_by_param_block_rms`` (the parameter's RMS,
    at least :math:`\epsilon_2`), whose formulas are keras'. `Adafactor` checks the
    arguments under keras' names.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adafactor_scaling(-0.8, 1.0, 1e-3, eps_grad_sq=1e-30)
      >>> params = jnp.array([3.0, -4.0])
      >>> updates, _ = tx.update(jnp.array([1.0, 0.0]), tx.init(params), params)
      >>> updates  # u = (1, 0), RMS(u) = 0.71 <= 1, times RMS(params) = 3.54
      Array([3.535534, 0.      ], dtype=float32)
    """
    factored = scale_by_factored_ema_of_squares(
        decay_rate=-beta_2_decay,
        min_dim_size_to_factor=0,
        epsilon=eps_grad_sq,
        last_two_axes=True,
    )
    return optax.chain(
        factored,
        optax.clip_by_block_rms(clip_threshold),
        optax.scale_by_param_block_rms(epsilon_2),
    )


def Adafactor(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    beta_2_decay: float = -0.8,
    epsilon_1: float = 1e-30,
    epsilon_2: float = 1e-3,
    clip_threshold: float = 1.0,
    relative_step: bool = True,
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
    r"""``keras.optimizers.Adafactor``: the last two axes factored, a relative step capped by η.

    .. math::

       \beta_t = 1 - t^{\mathtt{beta\_2\_decay}}, \quad
       R_t = \beta_t R_{t-1} + (1-\beta_t)\,\mathrm{mean}_{-1}(g_t^2 + \epsilon_1), \quad
       C_t = \beta_t C_{t-1} + (1-\beta_t)\,\mathrm{mean}_{-2}(g_t^2 + \epsilon_1),

       \hat v_t = \frac{R_t\, C_t}{\mathrm{mean}_{-1}(R_t)}, \quad
       u_t = \frac{g_t}{\sqrt{\hat v_t}}, \quad
       \hat u_t = \frac{u_t}{\max(1, \mathrm{RMS}(u_t)/d)}, \quad
       \theta_t = \theta_{t-1} - \min(\eta_t, \tfrac{1}{\sqrt t})
                   \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\, \hat u_t,

    with :math:`d` = ``clip_threshold``; every variable of rank >= 2 is factored on its last two
    axes (leading axes index a stack of matrices), vectors keep :math:`v_t` whole. optax's
    ``adafactor`` factors the two largest axes, only from 128 entries, multiplies by η rather than
    capping a relative step with it, and its weight decay does not touch what the RMS reads. Built
    from `scale_by_factored_ema_of_squares` (``last_two_axes=True``, ``min_dim_size_to_factor=0``,
    ``decay_rate=-beta_2_decay``), ``optax.clip_by_block_rms``, ``optax.scale_by_param_block_rms``
    and the step size :math:`\min(\eta_t, 1/\sqrt t)`. ``weight_decay`` shrinks the parameters
    by :math:`\eta_t\lambda` first, and :math:`\mathrm{RMS}(\theta)` is that of the shrunk
    parameters (`decay_before_step`), as in keras.

    keras 3.15 caps the step at :math:`1/\sqrt t` whatever ``relative_step`` says (its
    ``rho_t = min(lr, 1/sqrt(t))`` does not read it), so ``relative_step`` is accepted and changes
    nothing here either.

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    ICML 2018, https://arxiv.org/abs/1804.04235

    Args:
      learning_rate: η >= 0, the cap of the relative step, or an optax schedule.
      beta_2_decay: <= 0, the exponent of the decay schedule.
      epsilon_1: >= 0, added to every squared gradient.
      epsilon_2: >= 0, the least parameter RMS the step is scaled by.
      clip_threshold: > 0, the largest RMS of :math:`\hat u_t`.
      relative_step: ignored, as by keras (see above).
      weight_decay, clipnorm, clipvalue, global_clipnorm, ...: keras' common options, as the
        module docstring describes.

    Returns:
      An `optax.GradientTransformationExtraArgs`; ``update`` needs the parameters.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Adafactor(learning_rate=0.1)
      >>> params = jnp.array([[3.0, 4.0], [0.0, 5.0]])
      >>> updates, _ = tx.update(jnp.array([[2.0, 2.0], [1.0, 1.0]]), tx.init(params), params)
      >>> updates  # a rank-1 gradient: u = 1 everywhere, times -0.1 * RMS(params)
      Array([[-0.35355338, -0.35355338],
             [-0.35355338, -0.35355338]], dtype=float32)
    """
    del relative_step, ema_momentum, ema_overwrite_frequency, name
    _validate.check_non_positive("beta_2_decay", beta_2_decay)
    _validate.check_non_negative("epsilon_1", epsilon_1)
    _validate.check_non_negative("epsilon_2", epsilon_2)
    _validate.check_positive("clip_threshold", clip_threshold)
    scaling = adafactor_scaling(beta_2_decay, clip_threshold, epsilon_2, eps_grad_sq=epsilon_1)
    return _chain(
        "Adafactor",
        scaling,
        learning_rate,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps,
        step_size=relative_step_size(learning_rate),
        reads_params=True,
    )
