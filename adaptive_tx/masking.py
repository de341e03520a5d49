r"""Cautious masking: drop the coordinates of an update that disagree in sign with the gradient.

A wrapper around any transformation, not a `adaptive_tx.Rule`: the rescaling by the mask's mean is
a reduction over each leaf, and the mask reads the gradient *and* the finished update, so it
applies to whatever the wrapped transformation computes (any rule, momentum, chain).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_tx import _validate, sparse
from adaptive_tx.learning_rate import ScaleByLearningRateState, ScaleByScheduledLearningRateState
from adaptive_tx.state_precision import compute_dtype

_LEARNING_RATE_STATES = (
    ScaleByLearningRateState,
    ScaleByScheduledLearningRateState,
    optax.ScaleByScheduleState,
)


def _has_learning_rate(state: Any) -> bool:
    """Whether a learning-rate transformation's state is in `state` (so its updates descend)."""
    found = []

    def visit(node: Any) -> bool:
        if isinstance(node, _LEARNING_RATE_STATES):
            found.append(node)
            return True
        return False

    jax.tree.leaves(state, is_leaf=visit)
    return bool(found)


def cautious_mask(
    update: jax.Array, gradient: jax.Array, descent: bool = True, floor: float = 1e-3
) -> jax.Array:
    r"""One leaf's cautious update: :math:`u \odot \phi / \max(\bar\phi, \text{floor})`.

    :math:`\phi = [u \cdot g < 0]` for a descent step (``descent``), :math:`[u \cdot g > 0]` for a
    scaling that points along the gradient; :math:`\bar\phi` is its mean over the leaf. For
    complex leaves the agreement is :math:`\mathrm{Re}(u \bar g)`. Computed in float32 (or
    wider), returned in the update's dtype.

    Example:
      >>> cautious_mask(jnp.array([-1.0, 2.0, -3.0, 4.0]), jnp.array([1.0, 1.0, 1.0, 1.0]))
      Array([-2.,  0., -6.,  0.], dtype=float32)
    """
    if update.size == 0:
        return update
    dtype = compute_dtype(jnp.result_type(update))
    agreement = jnp.real(update.astype(dtype) * jnp.conj(gradient.astype(dtype)))
    phi = (agreement < 0) if descent else (agreement > 0)
    phi = phi.astype(jnp.real(jnp.zeros((), dtype)).dtype)
    factor = phi / jnp.maximum(jnp.mean(phi), floor)
    return (update.astype(dtype) * factor).astype(update.dtype)


def cautious(
    inner: optax.GradientTransformation,
    *,
    descent: bool = True,
    floor: float = 1e-3,
) -> optax.GradientTransformationExtraArgs:
    r"""Cautious masking of any transformation's updates (C-AdamW, C-Lion, ...).

    With :math:`u_t` the wrapped transformation's update and :math:`g_t` the gradient, per leaf:

    .. math::

       \phi_t = [\,u_t \odot g_t < 0\,], \qquad
       u'_t = u_t \odot \phi_t \,/\, \max\!\big(\mathrm{mean}(\phi_t), \text{floor}\big),

    that is, a coordinate moves only where the step goes downhill for the current gradient, and
    the kept coordinates are rescaled so that the leaf's average step size is kept. ``descent``
    says which way the wrapped updates point: True for an optimizer that includes its learning
    rate (``cautious(adamw(1e-3))``: a step *against* the gradient agrees), False for a scaling
    placed before the learning rate (``scale_by_bias_corrected_moments()``: a step *along* the
    gradient agrees, :math:`\phi_t = [u_t \odot g_t > 0]`). The paper's C-AdamW, whose weight
    decay is not masked, is ``optax.chain(cautious(scale_by_bias_corrected_moments(),
    descent=False), add_decoupled_weight_decay(wd), scale_by_learning_rate(lr))``; wrapping
    ``adamw`` masks its weight decay too. The paper rescales by :math:`d/(\mathrm{nnz}(\phi)+1)`,
    which is :math:`1/\mathrm{mean}(\phi)` up to :math:`1/d`; the floor (as common
    implementations) bounds the factor at :math:`1/\text{floor}` where almost nothing agrees.

    The state is the wrapped transformation's, unchanged (the mask is a function of this step's
    update and gradient). Row-sparse gradient leaves are refused: the mean of the mask over a few
    rows of a table, or over the whole table, has no sound meaning (the second would rescale the
    touched rows by the table's size over their count).

    Reference: Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with One Line of
    Code", 2024, https://arxiv.org/abs/2411.16085

    Args:
      inner: the transformation whose updates are masked.
      descent: whether the inner updates are descent steps (with the learning rate; True) or
        scalings along the gradient (before the learning rate; False).
      floor: the smallest mask mean the rescaling divides by, in (0, 1].

    Returns:
      An `optax.GradientTransformationExtraArgs` with the inner transformation's state.

    Example:
      >>> import adaptive_tx as atx
      >>> tx = cautious(atx.adam(0.1))
      >>> state = tx.init(jnp.zeros(2))
      >>> _, state = tx.update(jnp.array([1.0, 1.0]), state)
      >>> updates, state = tx.update(jnp.array([1.0, -0.01]), state)
      >>> updates  # the second coordinate's momentum still goes up its gradient: dropped
      Array([-0.2,  0. ], dtype=float32)
    """
    floor = _validate.check_positive("floor", floor)
    if _validate._concrete(floor) is not None and floor > 1:
        raise ValueError(f"floor must be in (0, 1], got floor={floor!r}")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        state = inner.init(params)
        if not descent and _has_learning_rate(state):
            raise ValueError(
                "cautious(descent=False): the wrapped transformation contains a learning rate, so "
                "its updates are descent steps and the mask would keep the coordinates that go "
                "uphill; pass descent=True (the default) to wrap an optimizer, or wrap the "
                "scaling alone, before the learning rate"
            )
        return state

    def update_fn(updates, state, params=None, **extra_args):
        leaves = jax.tree_util.tree_flatten_with_path(updates, is_leaf=sparse.is_row_sparse)[0]
        rows = [jax.tree_util.keystr(path) for path, leaf in leaves if sparse.is_row_sparse(leaf)]
        if rows:
            raise ValueError(
                f"cautious: gradient leaf {rows[0]} is row-sparse (RowSparse); the mask's mean "
                "over a few rows of a table has no sound meaning, so cautious masking takes dense leaves "
                "only: put the embedding tables in their own optax.multi_transform group without "
                "cautious, or pass them dense (RowSparse.todense())"
            )
        new_updates, new_state = inner.update(updates, state, params, **extra_args)
        masked = jax.tree.map(
            lambda u, g: cautious_mask(u, g, descent, floor), new_updates, updates
        )
        return masked, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
