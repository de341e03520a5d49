r"""Layer-wise methods: factors computed per leaf (per layer) from the whole leaf.

A per-coordinate `adaptive_tx.rule.Rule` sees one coordinate at a time; the transformations here
reduce over a whole leaf. LAMB's *trust ratio* rescales each leaf's step so that its norm is
proportional to the parameter's norm:

.. math::

   r = \frac{\|\theta\|}{\|u\|} \ (1 \text{ where either norm is } 0), \qquad u \leftarrow r\,u.

NovoGrad's second moment is one number per leaf, the moving average of :math:`\|g\|^2`
(`scale_by_novograd`).

These are statements about a whole leaf: on the touched rows of a table
(`adaptive_tx.sparse.RowSparse`) a norm would be another number than on the table, so a
row-sparse leaf is refused, with the fix (``sparse.prepare_rows(lazy=False)`` first in the
chain: the dense step at the dense cost).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from adaptive_tx import _validate, sparse
from adaptive_tx.rule import ComplexToRealError
from adaptive_tx.state_precision import compute_dtype


def _refuse_rows(where: str, updates: optax.Updates) -> None:
    """A row-sparse leaf raises, naming the transformation, the leaf and the fix."""
    with_paths = jax.tree_util.tree_flatten_with_path(updates, is_leaf=sparse.is_row_sparse)[0]
    for path, leaf in with_paths:
        if sparse.is_row_sparse(leaf):
            raise TypeError(
                f"{where}: gradient leaf {jax.tree_util.keystr(path) or '<root>'} is row-sparse, "
                "but a norm over the whole leaf is not defined by its touched rows; put "
                "sparse.prepare_rows(lazy=False) first in the chain (dense gradients) or use a "
                "per-coordinate method (adamw) for this leaf"
            )


def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> optax.GradientTransformation:
    r"""Scale each leaf's update by the trust ratio :math:`\|\theta\| / \|u\|` (LAMB, LARS).

    .. math::

       u \leftarrow c\, \frac{\max(\|\theta\|, m)}{\max(\|u\|, m) + \epsilon}\, u, \quad
       \text{or } u \text{ unchanged where } \|\theta\| = 0 \text{ or } \|u\| = 0,

    per leaf, with :math:`c` = ``trust_coefficient`` and :math:`m` = ``min_norm``. This is
    ``optax.scale_by_trust_ratio`` (its arithmetic, used as is) with one more contract: a
    row-sparse leaf raises ``TypeError`` naming the leaf and the fix, since the norm of a few
    rows of a table is not the table's.

    Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020, https://arxiv.org/abs/1904.00962

    Args:
      min_norm: :math:`m`, the floor of both norms.
      trust_coefficient: :math:`c`.
      eps: :math:`\epsilon`, added to the update's norm.

    Returns:
      An `optax.GradientTransformation` without state (``optax.EmptyState``); its ``update`` needs
      ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_trust_ratio()
      >>> params = {'w': jnp.array([3.0, 4.0])}
      >>> updates, _ = tx.update({'w': jnp.array([0.5, 0.0])}, tx.init(params), params)
      >>> updates['w']  # 0.5 * |θ| / |u| = 0.5 * 5 / 0.5
      Array([5., 0.], dtype=float32)
    """
    inner = optax.scale_by_trust_ratio(min_norm, trust_coefficient, eps)

    def update_fn(updates, state, params=None):
        _refuse_rows("scale_by_trust_ratio", updates)
        return inner.update(updates, state, params)

    return optax.GradientTransformation(inner.init, update_fn)


class ScaleByNovogradState(NamedTuple):
    """State of `scale_by_novograd` (optax's field names).

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      mu: params-shaped tree, the momentum :math:`m_t` (in ``mu_dtype``).
      nu: one scalar per leaf, :math:`v_t`, the moving average of the leaf's :math:`\|g\|^2` (in
        the parameter's real dtype).

    Example:
      >>> tx = scale_by_novograd()
      >>> state = tx.init({'w': jnp.zeros((2, 3))})
      >>> state.mu['w'].shape, state.nu['w'].shape
      ((2, 3), ())
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates

    def per_coordinate_scale(self) -> optax.Updates:
        """The scale the effective learning rate multiplies, 1: the direction (the momentum
        ``mu``) holds the per-leaf normalization."""
        ones = lambda m: jnp.ones(jnp.shape(m), compute_dtype(jnp.result_type(m)))  # noqa: E731
        return jax.tree.map(ones, self.mu)


def novograd_leaf(g, p, mu, nu, first, b1, b2, eps, eps_root, weight_decay):
    r"""One NovoGrad step on one leaf, in float32 (or wider): returns the new :math:`(m, v)`.

    :math:`v = \|g\|^2` at the first step, else :math:`\beta_2 v + (1-\beta_2)\|g\|^2`;
    :math:`m = [\beta_1 m] + g / (\sqrt{v + \epsilon_{root}} + \epsilon) + \lambda \theta`
    (no :math:`\beta_1 m` at the first step).

    Example:
      >>> m, v = novograd_leaf(jnp.array([3.0, 4.0]), jnp.zeros(2), jnp.zeros(2), jnp.float32(0),
      ...                      True, 0.9, 0.25, 0.0, 0.0, 0.0)
      >>> m, v  # g / |g|
      (Array([0.6, 0.8], dtype=float32), Array(25., dtype=float32))
    """
    squares = jnp.linalg.norm(g) ** 2  # optax's rounding (the root, then the square)
    nu = jnp.where(first, squares, b2 * nu + (1 - b2) * squares)
    step = g / (jnp.sqrt(nu + eps_root) + eps) + weight_decay * p
    return jnp.where(first, step, b1 * mu + step), nu


def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformation:
    r"""NovoGrad's step: the gradient over its leaf's moving RMS norm, plus decay, averaged.

    .. math::

       v_t = \beta_2 v_{t-1} + (1-\beta_2)\,\|g_t\|^2 \ (v_1 = \|g_1\|^2), \quad
       m_t = \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \epsilon_{root}} + \epsilon}
             + \lambda \theta_{t-1} \ (m_1 \text{ without } \beta_1 m_0), \qquad u_t = m_t,

    with one :math:`v` per leaf (layer) and :math:`\|g\|` the leaf's norm. Equals
    ``optax.scale_by_novograd`` (same arguments); computes in float32 for lower-precision
    parameters, keeps :math:`m` in ``mu_dtype`` and :math:`v` in the parameter's real dtype.
    A row-sparse leaf raises ``TypeError`` naming the leaf and the fix (the norm of a few rows is
    not the table's). ``update`` needs ``params`` (the decay reads them).

    Reference: Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments
    for Training of Deep Networks", 2019, https://arxiv.org/abs/1905.11286

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_{root}` >= 0, inside the root.
      weight_decay: :math:`\lambda` >= 0 (a number).
      mu_dtype: the dtype of :math:`m` (None: the parameter's).

    Returns:
      An `optax.GradientTransformation` whose state is `ScaleByNovogradState`.

    Example:
      >>> tx = scale_by_novograd()
      >>> params = {'w': jnp.zeros(2)}
      >>> updates, _ = tx.update({'w': jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> updates['w']  # g / |g| at the first step
      Array([0.6, 0.8], dtype=float32)
    """
    b1 = _validate.check_unit_interval("b1", b1)
    b2 = _validate.check_unit_interval("b2", b2)
    eps = _validate.check_non_negative("eps", eps)
    eps_root = _validate.check_non_negative("eps_root", eps_root)
    weight_decay = _validate.check_non_negative("weight_decay", weight_decay)
    if mu_dtype is not None:
        mu_dtype = _validate.check_state_dtype(mu_dtype, "mu_dtype")

    def init_fn(params):
        _validate.check_floating_params("ScaleByNovograd", params)
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params)
        nu = jax.tree.map(lambda p: jnp.zeros([], jnp.finfo(jnp.result_type(p)).dtype), params)
        return ScaleByNovogradState(jnp.zeros([], jnp.int32), mu, nu)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "ScaleByNovograd reads the params: call update(updates, state, params)"
            )
        _refuse_rows("scale_by_novograd", updates)
        _validate.check_tree_matches("ScaleByNovograd", updates, state.mu)
        _validate.check_tree_matches("ScaleByNovograd", updates, params)
        count = optax.safe_increment(state.count)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
        new = []
        leaves = [treedef.flatten_up_to(tree) for tree in (params, state.mu, state.nu)]
        for (path, g), p, mu, nu in zip(with_paths, *leaves):
            if jnp.iscomplexobj(g) and not jnp.iscomplexobj(mu):
                error = ComplexToRealError(jnp.result_type(g), jnp.result_type(mu))
                raise TypeError(
                    error.message("ScaleByNovograd", jax.tree_util.keystr(path) or "<root>")
                )
            wide = lambda x: jnp.asarray(x).astype(compute_dtype(jnp.result_type(x)))  # noqa: E731
            hyper = (b1, b2, eps, eps_root, weight_decay)
            m, v = novograd_leaf(wide(g), wide(p), wide(mu), wide(nu), count == 1, *hyper)
            update = m.astype(jnp.result_type(g, mu))
            new.append((update, m.astype(mu.dtype), v.astype(nu.dtype)))
        parts = [treedef.unflatten([n[i] for n in new]) for i in range(3)]
        return parts[0], ScaleByNovogradState(count, parts[1], parts[2])

    return optax.GradientTransformation(init_fn, update_fn)
