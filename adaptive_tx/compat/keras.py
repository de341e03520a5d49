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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptive_tx import _validate, sparse
from adaptive_tx.compat._common import is_off, real_params_only
from adaptive_tx.delta import scale_by_adadelta
from adaptive_tx.ema_of_squares import scale_by_ema_of_squares
from adaptive_tx.factored import scale_by_factored_ema_of_squares
from adaptive_tx.ftrl_proximal import scale_by_ftrl
from adaptive_tx.layerwise import scale_by_trust_ratio
from adaptive_tx.learning_rate import scale_by_learning_rate
from adaptive_tx.moments import scale_by_bias_corrected_moments, scale_by_inf_norm_moments
from adaptive_tx.sign import scale_by_lion
from adaptive_tx.sum_of_squares import scale_by_sum_of_squares
from adaptive_tx.weight_decay import add_decoupled_weight_decay

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

_COMPLEX_HINT = "keras optimizers have no convention for complex variables"


def clip_each_by_norm(max_norm: float) -> optax.GradientTransformation:
    r"""Clip each leaf to L2 norm ``max_norm`` separately (keras' ``clipnorm``).

    .. math::

       g \leftarrow g \,\frac{c}{\max(\|g\|_2, c)} \quad \text{for each leaf } g.

    ``optax.clip_by_global_norm`` applied to every leaf on its own.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = clip_each_by_norm(1.0)
      >>> updates, _ = tx.update({'a': jnp.array([3.0, 4.0]), 'b': jnp.array([0.5])}, tx.init(None))
      >>> updates['a'], updates['b']
      (Array([0.6, 0.8], dtype=float32), Array([0.5], dtype=float32))
    """
    clip = optax.clip_by_global_norm(max_norm)

    def clip_each(updates, params=None):
        del params
        return jax.tree.map(lambda g: clip.update(g, clip.init(g))[0], updates)

    return optax.stateless(clip_each)


def _clipping(clipnorm: Any, clipvalue: Any, global_clipnorm: Any) -> list:
    """Keras' gradient clipping as a list of at most one transformation (0 or None: none)."""
    given = {
        "clipnorm": clipnorm,
        "clipvalue": clipvalue,
        "global_clipnorm": global_clipnorm,
    }
    if sum(v is not None for v in given.values()) > 1:
        raise ValueError(
            "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
            f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
        )
    for name, value in given.items():
        _validate.check_non_negative(name, value, allow_inf=True)  # inf: no clipping
    if not is_off(clipnorm):
        return [clip_each_by_norm(clipnorm)]
    if not is_off(global_clipnorm):
        return [optax.clip_by_global_norm(global_clipnorm)]
    if not is_off(clipvalue):
        return [optax.clip(clipvalue)]
    return []


def _check_options(use_ema: bool, loss_scale_factor: Any, gradient_accumulation_steps: Any) -> None:
    """Rejects the keras options that change the math and that the presets do not reproduce."""
    if use_ema:
        raise ValueError(
            "use_ema=True is not supported: keep an exponential moving average of the "
            "parameters outside the optimizer (e.g. optax.ema applied to the parameters)"
        )
    if loss_scale_factor is not None:
        raise ValueError(
            f"loss_scale_factor={loss_scale_factor!r} is not supported: divide the gradients "
            "by the loss scale before the optimizer"
        )
    if not is_off(gradient_accumulation_steps):
        raise ValueError(
            f"gradient_accumulation_steps={gradient_accumulation_steps!r} is not supported: wrap "
            "the preset in optax.MultiSteps(tx, every_k_schedule=...)"
        )


def decay_before_step(
    decay: optax.GradientTransformation, step: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    r"""keras' order when the step reads the parameters: decay them first, then step from there.

    .. math::

       \theta' = \theta + \mathrm{decay}(0, \theta), \qquad
       u = (\theta' - \theta) + \mathrm{step}(g, \theta').

    Keras applies ``weight_decay`` to the variables before ``update_step``, so a step that reads
    them (Adafactor's :math:`\mathrm{RMS}(\theta)`) reads the decayed ones. For steps that do not
    read the parameters this equals ``optax.chain(step, decay)``.

    Args:
      decay: the weight decay, adding :math:`-\eta\lambda\theta` to zero updates.
      step: the rest of the update, evaluated at the decayed parameters.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose state is ``(decay state, step state)``;
      ``update`` needs the parameters.

    Example:
      >>> import jax.numpy as jnp
      >>> from adaptive_tx.weight_decay import add_decoupled_weight_decay
      >>> tx = decay_before_step(add_decoupled_weight_decay(0.5, learning_rate=1.0),
      ...                        optax.scale_by_param_block_rms())
      >>> params = jnp.array([2.0, 2.0])
      >>> updates, _ = tx.update(jnp.ones(2), tx.init(params), params)
      >>> updates  # -0.5 * 2 + RMS(2 * (1 - 0.5))
      Array([0., 0.], dtype=float32)
    """
    step = optax.with_extra_args_support(step)

    def init_fn(params):
        return decay.init(params), step.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        shrink, decay_state = decay.update(jax.tree.map(jnp.zeros_like, updates), state[0], params)
        decayed = optax.apply_updates(params, shrink)
        updates, step_state = step.update(updates, state[1], decayed, **extra_args)
        return jax.tree.map(jnp.add, shrink, updates), (decay_state, step_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _chain(
    name: str,
    scaling: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: Any,
    clipnorm: Any,
    clipvalue: Any,
    global_clipnorm: Any,
    use_ema: bool,
    loss_scale_factor: Any,
    gradient_accumulation_steps: Any,
    momentum: Any = 0,
    step_size: optax.ScalarOrSchedule | None = None,
    reads_params: bool = False,
    rate_inside: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """clipping → scaling → learning rate → momentum → weight decay, as keras applies them.

    ``step_size`` scales the step in place of ``learning_rate`` (the weight decay keeps
    ``learning_rate``); with ``reads_params`` the scaling sees the decayed parameters
    (`decay_before_step`); with ``rate_inside`` the scaling applies the learning rate itself
    (FTRL) and no ``scale_by_learning_rate`` follows it.
    """
    _check_options(use_ema, loss_scale_factor, gradient_accumulation_steps)
    _validate.check_learning_rate(learning_rate)
    parts = _clipping(clipnorm, clipvalue, global_clipnorm)
    step = [scaling, scale_by_learning_rate(learning_rate if step_size is None else step_size)]
    if rate_inside:
        step = [scaling]
    if not is_off(momentum):
        step.append(sparse.trace(decay=momentum))  # optax.trace; lazy on row-sparse leaves
    if weight_decay is None:
        parts += step
    else:
        decay = add_decoupled_weight_decay(weight_decay, learning_rate=learning_rate)
        parts += [decay_before_step(decay, optax.chain(*step))] if reads_params else step + [decay]
    return real_params_only(optax.chain(*parts), f"compat.keras.{name}", _COMPLEX_HINT)


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


def _float32(value: Any) -> Any:
    """A Python number rounded to float32, as keras' ``ops.cast(value, "float32")`` (arrays, e.g.
    injected hyperparameters, are float32 already and pass).

    Example:
      >>> 1 - _float32(0.99999)  # keras' Nadam weight of g**2: 1.00136e-05, not 1e-05
      1.0013580322265625e-05
    """
    if isinstance(value, (int, float)):
        return float(np.float32(value))
    return value


def _check_betas(beta_1: Any, beta_2: Any, epsilon: Any) -> None:
    _validate.check_unit_interval("beta_1", beta_1)
    _validate.check_unit_interval("beta_2", beta_2)
    _validate.check_non_negative("epsilon", epsilon)


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
