r"""Layer-wise methods: factors computed per leaf (per layer) from the whole leaf.

A per-coordinate `adaptive_tx.rule.Rule` sees one coordinate at a time; the transformations here
reduce over a whole leaf. LAMB's *trust ratio* rescales each leaf's step so that its norm is
proportional to the parameter's norm:

.. math::

   r = \frac{\|\theta\|}{\|u\|} \ (1 \text{ where either norm is } 0), \qquad u \leftarrow r\,u.

It is a statement about a whole leaf: on the touched rows of a table
(`adaptive_tx.sparse.RowSparse`) a ratio of norms would be another number than on the table, so
a row-sparse leaf is refused, with the fix (``sparse.prepare_rows(lazy=False)`` first in the
chain: the dense step at the dense cost).
"""

from __future__ import annotations

import jax
import optax

from adaptive_tx import sparse


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
