r"""``torch.optim`` presets: torch's names, keyword arguments and defaults, as Optax transformations.

Each factory returns an ``optax.chain`` of this library's primitives that reproduces the
``torch.optim`` optimizer of the same name step for step (checked against torch 2.13 on CPU, to
1e-4 relative over 100 steps, in ``tests/test_compat_torch.py``):

.. code-block:: text

   [maximize: optax.scale(-1)] → [coupled L2: optax.add_decayed_weights(λ)] → adaptive scaling
   → [decoupled: add_decoupled_weight_decay(λ)] → [RMSprop momentum: sparse.trace] → learning rate

torch computes the scalars derived from the betas (the bias corrections :math:`1-\beta^t`,
RAdam's :math:`\rho_t`) in Python float64; the presets compute them as float64 would give them,
rounded once to float32 (``exact_scalars=True``), where optax rounds β to float32 first (1.4e-3 off
at β2 = 0.99999). The parameters are needed by ``update`` when ``weight_decay`` is set. ``lr`` is
a number, or an optax schedule of the step count (0, 1, 2, ...) in place of a torch LR scheduler.
``foreach``, ``fused``, ``capturable`` and ``differentiable`` choose torch kernels and do not
change the math: they are accepted and ignored. torch views complex parameters as pairs of reals;
these presets reject them (wrap a preset in ``optax.contrib.split_real_and_imaginary`` for torch's
behaviour).

``SparseAdam`` runs on `adaptive_tx.sparse.RowSparse` gradients (lazy: only the rows present in
the gradient update their moments and parameters), as torch's runs on sparse COO gradients. Every
convention is tabulated in ``docs/conventions.md``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate, sparse
from adaptive_tx.compat._common import check_pair, is_off, no_params_argument, real_params_only
from adaptive_tx.delta import scale_by_adadelta
from adaptive_tx.ema_of_squares import scale_by_ema_of_squares
from adaptive_tx.learning_rate import scale_by_learning_rate
from adaptive_tx.moments import (
    scale_by_bias_corrected_moments,
    scale_by_inf_norm_moments,
    scale_by_rectified_moments,
)
from adaptive_tx.sign import scale_by_rprop
from adaptive_tx.sum_of_squares import scale_by_sum_of_squares
from adaptive_tx.weight_decay import add_decoupled_weight_decay

__all__ = (
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SparseAdam",
)

_COMPLEX_HINT = (
    "torch treats the real and imaginary parts as separate coordinates: wrap the preset in "
    "optax.contrib.split_real_and_imaginary to do the same"
)


def _chain(
    name: str,
    scaling: optax.GradientTransformation,
    lr: optax.ScalarOrSchedule,
    weight_decay: Any = 0,
    *,
    decoupled: bool = False,
    maximize: bool = False,
    momentum: Any = 0,
) -> optax.GradientTransformationExtraArgs:
    """maximize → coupled L2 → scaling → decoupled decay → momentum → learning rate, as torch."""
    lr = _validate.check_learning_rate(lr, "lr")
    weight_decay = _validate.check_non_negative("weight_decay", weight_decay)
    # Negated with sparse.map_values: a RowSparse gradient's values flip, its indices stay.
    parts = (
        [optax.stateless(lambda u, p=None: sparse.map_values(jnp.negative, u))] if maximize else []
    )
    if not decoupled and not is_off(weight_decay):
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(scaling)
    if decoupled and not is_off(weight_decay):
        parts.append(add_decoupled_weight_decay(weight_decay))
    if not is_off(momentum):
        parts.append(sparse.trace(decay=momentum))  # optax.trace; lazy on row-sparse leaves
    parts.append(scale_by_learning_rate(lr))
    return real_params_only(optax.chain(*parts), f"compat.torch.{name}", _COMPLEX_HINT)


@no_params_argument
def Adagrad(
    lr: optax.ScalarOrSchedule = 1e-2,
    lr_decay: float = 0,
    weight_decay: float = 0,
    initial_accumulator_value: float = 0,
    eps: float = 1e-10,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.Adagrad``: ε outside the root, a decaying rate, coupled L2.

    .. math::

       g_t \leftarrow g_t + \lambda\theta_{t-1}, \quad G_t = G_{t-1} + g_t^2, \quad
       \eta_t = \frac{\text{lr}}{1 + (t-1)\,\mathtt{lr\_decay}}, \quad
       \theta_t = \theta_{t-1} - \eta_t \frac{g_t}{\sqrt{G_t} + \epsilon},

    :math:`G_0` = ``initial_accumulator_value``. `scale_by_sum_of_squares` with
    ``eps_in_sqrt=False``.

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011, https://jmlr.org/papers/v12/duchi11a.html

    Args:
      lr: the learning rate (or an optax schedule), >= 0.
      lr_decay: >= 0, the rate at step t is ``lr / (1 + (t - 1) * lr_decay)``.
      weight_decay: λ >= 0 of the L2 term added to the gradient.
      initial_accumulator_value: :math:`G_0` >= 0.
      eps: >= 0, added to :math:`\sqrt{G_t}`.
      foreach, differentiable, fused: torch kernel choices, ignored.
      maximize: ascend the objective instead of descending.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Adagrad(lr=0.1, lr_decay=1.0)
      >>> params = jnp.array([1.0])
      >>> state = tx.init(params)
      >>> for _ in range(2):  # rates 0.1 then 0.1 / (1 + 1)
      ...     updates, state = tx.update(jnp.array([2.0]), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params  # 1 - 0.1 * 2 / sqrt(4) - 0.05 * 2 / sqrt(8)
      Array([0.86464], dtype=float32)
    """
    del foreach, differentiable, fused
    lr_decay = _validate.check_non_negative("lr_decay", lr_decay)
    lr = _validate.check_learning_rate(lr, "lr")
    rate = lr
    if not is_off(lr_decay):

        def rate(count):
            return (lr(count) if callable(lr) else lr) / (1 + count * lr_decay)

    scaling = scale_by_sum_of_squares(initial_accumulator_value, eps, eps_in_sqrt=False)
    return _chain("Adagrad", scaling, rate, weight_decay, maximize=maximize)


@no_params_argument
def Adadelta(
    lr: optax.ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0,
    foreach: bool | None = None,
    *,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.Adadelta``: optax's arithmetic, coupled L2, ``lr`` 1 (Zeiler's method).

    .. math::

       g_t \leftarrow g_t + \lambda\theta_{t-1}, \quad
       E[g^2]_t = \rho E[g^2]_{t-1} + (1-\rho) g_t^2, \quad
       \Delta_t = \frac{\sqrt{E[\Delta^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}} g_t, \quad
       \theta_t = \theta_{t-1} - \text{lr}\, \Delta_t,

    :math:`E[\Delta^2]_t = \rho E[\Delta^2]_{t-1} + (1-\rho) \Delta_t^2` (the step before the
    learning rate). `scale_by_adadelta`.

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012,
    https://arxiv.org/abs/1212.5701

    Args:
      lr: the learning rate (or an optax schedule), >= 0.
      rho: :math:`\rho` in [0, 1).
      eps: ε > 0, inside both square roots.
      weight_decay: λ >= 0 of the L2 term added to the gradient.
      foreach, capturable, differentiable: torch kernel choices, ignored.
      maximize: ascend the objective instead of descending.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Adadelta(rho=0.5, eps=1.0)
      >>> params = jnp.array([1.0])
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # 1 - sqrt(1) / sqrt(0.5 * 2² + 1) * 2
      Array([-0.1547005], dtype=float32)
    """
    del foreach, capturable, differentiable
    scaling = scale_by_adadelta(rho, eps)
    return _chain("Adadelta", scaling, lr, weight_decay, maximize=maximize)


@no_params_argument
def Rprop(
    lr: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.Rprop``: optax's rule, the current step, an ``lr`` outside the bounds clamped.

    .. math::

       \eta_t = \mathrm{clip}\big(\eta_{t-1} \cdot \{\eta_+, \eta_-, 1\}, \eta_{min}, \eta_{max}\big)
       \text{ as } g_t g_{t-1} >, <, = 0, \qquad
       \theta_t = \theta_{t-1} - \eta_t \operatorname{sign}(g_t)
       \text{ (0 where } g_t g_{t-1} < 0 \text{, and } g_t \text{ then counts as 0)},

    :math:`\eta_0` = ``lr``. `scale_by_rprop` with ``clamp_unchanged`` (torch clamps every step
    size, so an ``lr`` outside ``step_sizes`` is clamped at the first step; optax keeps it until
    the first sign comparison). ``lr`` is a number: it is only the initial step size.

    Reference: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
    The RPROP Algorithm", ICNN 1993, https://doi.org/10.1109/ICNN.1993.298623

    Args:
      lr: the initial step size, >= 0.
      etas: :math:`(\eta_-, \eta_+)`, the factors of a step whose gradient flipped / kept its sign.
      step_sizes: :math:`(\eta_{min}, \eta_{max})`.
      capturable, foreach, differentiable: torch kernel choices, ignored.
      maximize: ascend the objective instead of descending.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Rprop(lr=0.1)
      >>> params = jnp.array([1.0, 1.0])
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)
      Array([0.9, 1.1], dtype=float32)
    """
    del capturable, foreach, differentiable
    for name, pair in (("etas", etas), ("step_sizes", step_sizes)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"Rprop: {name} must be a pair of numbers, got {name}={pair!r}")
    (eta_minus, eta_plus), (min_step, max_step) = etas, step_sizes
    scaling = scale_by_rprop(lr, eta_minus, eta_plus, min_step, max_step, clamp_unchanged=True)
    return _chain("Rprop", scaling, 1.0, maximize=maximize)


@no_params_argument
def RMSprop(
    lr: optax.ScalarOrSchedule = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum: float = 0,
    centered: bool = False,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.RMSprop``: ε outside the root, momentum on the scaled gradient before lr.

    .. math::

       g_t \leftarrow g_t + \lambda\theta_{t-1}, \quad v_t = \alpha v_{t-1} + (1-\alpha) g_t^2, \quad
       b_t = \text{momentum}\; b_{t-1} + \frac{g_t}{\sqrt{\bar v_t} + \epsilon}, \quad
       \theta_t = \theta_{t-1} - \text{lr}\; b_t,

    :math:`\bar v_t = v_t`, or :math:`v_t - \mu_t^2` with ``centered``
    (:math:`\mu_t = \alpha\mu_{t-1} + (1-\alpha) g_t`). No bias correction, :math:`v_0 = 0`.
    `scale_by_ema_of_squares` with ``eps_in_sqrt=False``, then ``optax.trace`` (the momentum buffer
    holds unscaled steps: torch applies lr after it, optax's rmsprop before).

    References: Hinton, lecture 6e, 2012,
    https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf ; centered: Graves,
    2013, https://arxiv.org/abs/1308.0850

    Args:
      lr: the learning rate (or an optax schedule), >= 0.
      alpha: the decay of the average of squares, in [0, 1).
      eps: >= 0, added to the root.
      weight_decay: λ >= 0 of the L2 term added to the gradient.
      momentum: >= 0, the decay of the momentum buffer (0: no buffer).
      centered: divide by the estimated standard deviation instead of the RMS.
      capturable, foreach, differentiable: torch kernel choices, ignored.
      maximize: ascend the objective instead of descending.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = RMSprop(lr=0.01, alpha=0.75, eps=1.0)
      >>> params = jnp.array([1.0])
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # 1 - 0.01 * 2 / (sqrt(0.25 * 4) + 1)
      Array([0.99], dtype=float32)
    """
    del capturable, foreach, differentiable
    alpha = _validate.check_unit_interval("alpha", alpha)
    momentum = _validate.check_non_negative("momentum", momentum)
    scaling = scale_by_ema_of_squares(decay=alpha, eps=eps, eps_in_sqrt=False, centered=centered)
    return _chain("RMSprop", scaling, lr, weight_decay, maximize=maximize, momentum=momentum)


@no_params_argument
def Adam(
    lr: optax.ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    amsgrad: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    decoupled_weight_decay: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.Adam``: coupled L2 (or decoupled), AMSGrad's maximum over the raw :math:`v_t`.

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
       \quad \theta_t = \theta_{t-1} - \text{lr} \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon},

    with :math:`g_t \leftarrow g_t + \lambda\theta_{t-1}` (coupled L2), or
    :math:`\theta \leftarrow \theta(1 - \text{lr}\,\lambda)` with ``decoupled_weight_decay``
    (AdamW). ``amsgrad`` uses :math:`\max_{\tau\le t} v_\tau` in place of :math:`v_t` (optax takes
    the maximum of the corrected :math:`\hat v_t`). `scale_by_bias_corrected_moments` with
    ``amsgrad_raw_max=True``.

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014,
    https://arxiv.org/abs/1412.6980 ; Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond",
    2018, https://arxiv.org/abs/1904.09237 ; Loshchilov & Hutter, "Decoupled Weight Decay
    Regularization", 2019, https://arxiv.org/abs/1711.05101

    Args:
      lr: the learning rate (or an optax schedule), >= 0.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: >= 0, added to :math:`\sqrt{\hat v_t}`.
      weight_decay: λ >= 0.
      amsgrad: use the running maximum of the second moment.
      foreach, capturable, differentiable, fused: torch kernel choices, ignored.
      maximize: ascend the objective instead of descending.
      decoupled_weight_decay: decay the parameters directly (AdamW) instead of adding λθ to g.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Adam(lr=0.1)
      >>> params = jnp.array([1.0, 1.0])
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(params), params)
      >>> optax.apply_updates(params, updates).round(4)  # the first step moves each coordinate by lr
      Array([0.9, 1.1], dtype=float32)
    """
    del foreach, capturable, differentiable, fused
    b1, b2 = check_pair("betas", betas)
    scaling = scale_by_bias_corrected_moments(
        b1=b1, b2=b2, eps=eps, amsgrad=amsgrad, amsgrad_raw_max=True, exact_scalars=True
    )
    return _chain(
        "Adam", scaling, lr, weight_decay, decoupled=decoupled_weight_decay, maximize=maximize
    )


@no_params_argument
def AdamW(
    lr: optax.ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.AdamW``: `Adam` with ``decoupled_weight_decay=True`` and λ = 0.01.

    .. math::

       \theta_t = \theta_{t-1}(1 - \text{lr}\,\lambda)
                  - \text{lr} \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}.

    The same update as ``optax.adamw`` (whose λ defaults to 1e-4), except AMSGrad's maximum.

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
    https://arxiv.org/abs/1711.05101

    Args:
      lr, betas, eps, amsgrad, maximize: see `Adam`.
      weight_decay: λ >= 0, the decoupled decay.
      foreach, capturable, differentiable, fused: torch kernel choices, ignored.

    Returns:
      An `optax.GradientTransformationExtraArgs`; ``update`` needs the parameters.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = AdamW(lr=0.1, weight_decay=0.5)
      >>> params = jnp.array([1.0])
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # 1 * (1 - 0.1 * 0.5) - 0.1
      Array([0.85], dtype=float32)
    """
    return Adam(
        lr,
        betas,
        eps,
        weight_decay,
        amsgrad,
        foreach=foreach,
        maximize=maximize,
        capturable=capturable,
        differentiable=differentiable,
        fused=fused,
        decoupled_weight_decay=True,
    )


@no_params_argument
def Adamax(
    lr: optax.ScalarOrSchedule = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.Adamax``: ε inside the maximum (as optax), coupled L2.

    .. math::

       g_t \leftarrow g_t + \lambda\theta_{t-1}, \quad m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
       \theta_t = \theta_{t-1} - \frac{\text{lr}}{1-\beta_1^t} \frac{m_t}{u_t}.

    `scale_by_inf_norm_moments`.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.1,
    https://arxiv.org/abs/1412.6980

    Args:
      lr: the learning rate (or an optax schedule), >= 0.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: >= 0, added to :math:`|g_t|`.
      weight_decay: λ >= 0 of the L2 term added to the gradient.
      foreach, differentiable, capturable: torch kernel choices, ignored.
      maximize: ascend the objective instead of descending.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = Adamax(lr=0.1, eps=0.0)
      >>> params = jnp.array([1.0, 1.0])
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(params), params)
      >>> optax.apply_updates(params, updates).round(4)
      Array([0.9, 1.1], dtype=float32)
    """
    del foreach, differentiable, capturable
    b1, b2 = check_pair("betas", betas)
    scaling = scale_by_inf_norm_moments(b1=b1, b2=b2, eps=eps, exact_scalars=True)
    return _chain("Adamax", scaling, lr, weight_decay, maximize=maximize)


@no_params_argument
def NAdam(
    lr: optax.ScalarOrSchedule = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.NAdam``: Dozat's momentum schedule :math:`\mu_t = \beta_1(1 - \frac12 0.96^{t\psi})`.

    .. math::

       \theta_t = \theta_{t-1} - \text{lr}
       \frac{\frac{\mu_{t+1}}{1-\Pi_{t+1}} m_t + \frac{1-\mu_t}{1-\Pi_t} g_t}
            {\sqrt{v_t/(1-\beta_2^t)} + \epsilon}, \qquad \Pi_t = \prod_{i \le t} \mu_i,

    with :math:`m_t, v_t` as in Adam and ψ = ``momentum_decay`` (optax's nadam is the constant
    :math:`\mu_t = \beta_1`). `scale_by_bias_corrected_moments` with ``nesterov=True,
    momentum_decay=ψ``; the product :math:`\Pi_t` is computed in closed form
    (`adaptive_tx.moments.momentum_product`).

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016,
    https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ

    Args:
      lr: the learning rate (or an optax schedule), >= 0.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: >= 0, added to :math:`\sqrt{\hat v_t}`.
      weight_decay: λ >= 0.
      momentum_decay: ψ >= 0.
      decoupled_weight_decay: decay the parameters directly (NAdamW) instead of adding λθ to g.
      foreach, capturable, differentiable: torch kernel choices, ignored.
      maximize: ascend the objective instead of descending.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = NAdam(lr=0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> updates  # -0.1 * (mu_2 m_1 / (1 - mu_1 mu_2) + g_1) / 3 = -0.1 * (0.45015 * 0.3 / 0.7974 + 3) / 3
      Array([-0.10565], dtype=float32)
    """
    del foreach, capturable, differentiable
    b1, b2 = check_pair("betas", betas)
    momentum_decay = _validate.check_non_negative("momentum_decay", momentum_decay, allow_inf=True)
    scaling = scale_by_bias_corrected_moments(
        b1=b1, b2=b2, eps=eps, nesterov=True, momentum_decay=momentum_decay, exact_scalars=True
    )
    return _chain(
        "NAdam", scaling, lr, weight_decay, decoupled=decoupled_weight_decay, maximize=maximize
    )


@no_params_argument
def RAdam(
    lr: optax.ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.RAdam``: rectified where :math:`\rho_t > 5`, ε added to the uncorrected root.

    .. math::

       \theta_t = \theta_{t-1} - \text{lr}\, \frac{m_t}{1-\beta_1^t}
       \begin{cases} r_t \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\
                     1 & \text{otherwise} \end{cases}

    with :math:`\rho_t, r_t` as in `scale_by_rectified_moments` (optax: :math:`\rho_t \ge 5` and
    :math:`\sqrt{\hat v_t} + \epsilon`). `scale_by_rectified_moments` with ``eps_hat=True,
    strict_threshold=True``.

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
    https://arxiv.org/abs/1908.03265

    Args:
      lr: the learning rate (or an optax schedule), >= 0.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: >= 0, added to :math:`\sqrt{v_t}`.
      weight_decay: λ >= 0.
      decoupled_weight_decay: decay the parameters directly instead of adding λθ to g.
      foreach, capturable, differentiable: torch kernel choices, ignored.
      maximize: ascend the objective instead of descending.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = RAdam(lr=0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> updates  # the first steps are SGD with (bias-corrected) momentum
      Array([-0.3], dtype=float32)
    """
    del foreach, capturable, differentiable
    b1, b2 = check_pair("betas", betas)
    scaling = scale_by_rectified_moments(
        b1=b1,
        b2=b2,
        eps=eps,
        threshold=5.0,
        eps_hat=True,
        strict_threshold=True,
        exact_scalars=True,
    )
    return _chain(
        "RAdam", scaling, lr, weight_decay, decoupled=decoupled_weight_decay, maximize=maximize
    )


def _require_row_sparse() -> optax.GradientTransformation:
    """Rejects dense gradient leaves at trace time, as torch's SparseAdam rejects dense gradients."""

    def check(updates, params=None):
        del params
        leaves = jax.tree_util.tree_flatten_with_path(updates, is_leaf=sparse.is_row_sparse)[0]
        for path, leaf in leaves:
            if not sparse.is_row_sparse(leaf):
                raise TypeError(
                    f"compat.torch.SparseAdam: gradient {jax.tree_util.keystr(path) or '<root>'} "
                    "is dense; SparseAdam takes adaptive_tx.sparse.RowSparse gradients (use Adam, "
                    "or optax.multi_transform with Adam for the dense parameters)"
                )
        return updates

    return optax.stateless(check)


@no_params_argument
def SparseAdam(
    lr: optax.ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.SparseAdam``: lazy Adam on row-sparse gradients, ε-hat form.

    For the rows :math:`R` present in the gradient (repeated rows summed), with :math:`t` the
    number of ``update`` calls (torch's per-parameter ``step``, counted even for empty gradients):

    .. math::

       m_{t,R} = \beta_1 m_{t-1,R} + (1-\beta_1) g_{t,R}, \quad
       v_{t,R} = \beta_2 v_{t-1,R} + (1-\beta_2) g_{t,R}^2, \quad
       \theta_{t,R} = \theta_{t-1,R} - \text{lr} \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
       \frac{m_{t,R}}{\sqrt{v_{t,R}} + \epsilon},

    and the other rows keep their moments and parameters. `scale_by_bias_corrected_moments` with
    ``eps_hat=True`` on `adaptive_tx.sparse.RowSparse` leaves (the row path of the same rule).
    Apply the updates with `adaptive_tx.sparse.apply_updates` (or ``optax.apply_updates``). Dense
    gradient leaves raise ``TypeError``, as in torch.

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014,
    https://arxiv.org/abs/1412.6980 ; torch.optim.SparseAdam,
    https://pytorch.org/docs/stable/generated/torch.optim.SparseAdam.html

    Args:
      lr: the learning rate (or an optax schedule), >= 0.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: >= 0, added to the uncorrected :math:`\sqrt{v_t}`.
      maximize: ascend the objective instead of descending.

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = SparseAdam(lr=0.1)
      >>> table = jnp.ones((3, 2))
      >>> g = sparse.RowSparse(jnp.array([2]), jnp.array([[3.0, -0.5]]), num_rows=3)
      >>> updates, _ = tx.update(g, tx.init(table), table)
      >>> sparse.apply_updates(table, updates)  # only row 2 moves, by lr (torch: 1.0999999 too)
      Array([[1.       , 1.       ],
             [1.       , 1.       ],
             [0.9      , 1.0999999]], dtype=float32)
    """
    b1, b2 = check_pair("betas", betas)
    scaling = scale_by_bias_corrected_moments(
        b1=b1, b2=b2, eps=eps, eps_hat=True, exact_scalars=True
    )
    return optax.chain(_require_row_sparse(), _chain("SparseAdam", scaling, lr, maximize=maximize))
