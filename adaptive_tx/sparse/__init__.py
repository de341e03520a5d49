r"""Row-sparse gradients for embedding tables, and the row-sparse execution of every rule.

A batch looks up :math:`K \ll V` rows of a :math:`V \times D` embedding table, so the table's
gradient is zero outside those rows. `RowSparse` holds it as the looked-up row indices and their
gradient rows; `value_and_grad` (with the drop-in `Embed`) gets it from a ``flax.nnx`` model without
ever forming a :math:`V \times D` gradient; and every transformation of this library takes it as a
leaf of the gradient tree, next to dense leaves, in one ``update`` call (so ``optax.chain`` and
``nnx.Optimizer`` work unchanged).

Semantics, the same for every rule because every rule goes through one path (`apply_rows`):

* **Duplicates.** Indices may repeat (a token twice in a batch); their rows are summed before any
  rule sees them, as `RowSparse.todense` sums them (in an unspecified order: with three or more
  repeats the rounding may differ from another summation order by an ulp).
* **Lazy updates (the default).** A transformation built by `adaptive_tx.rule.dense_transformation`
  gathers the touched rows of its statistics, applies its `Rule` to them (``rule.apply_rule``,
  the very function the dense path applies to whole leaves) with the transformation's step count
  :math:`t`, and scatters them back:

  .. math::

     (u_r, s_r) \leftarrow \mathrm{apply\_rule}(g_r, s_r, t) \text{ for each touched row } r,
     \qquad s_r \text{ kept and } u_r = 0 \text{ for every other row}.

  Untouched rows keep their statistics and their parameters: the semantics of
  ``torch.optim.SparseAdam`` and of TF-Addons' ``LazyAdam``. For Adagrad this is the dense
  update, since a zero gradient moves neither the accumulator nor the parameter (the accumulators
  agree bit for bit, the parameters up to the rounding of the final add; row-wise Adagrad also up
  to the summation order of the row means). For RMSProp the averages of untouched rows do not decay. For the Adam family the
  moments of untouched rows neither decay nor move the row (momentum stops when a row is not looked
  up). :math:`t` counts the transformation's steps, like torch's per-parameter ``step`` (one
  counter per tensor, advanced at every ``optimizer.step()``), so a row first touched at step 1000
  is bias-corrected as at step 1000, in torch SparseAdam and here.
* **Dense semantics, one flag away.** ``prepare_rows(lazy=False)`` first in a chain turns every
  row-sparse leaf into its dense array; the chain after it is then the dense transformation, with
  its dense cost (:math:`V \times D` per step, like optax).
* **Bad indices.** A negative or too large row index never touches another row (plain JAX gathers
  clamp such indices and its scatters wrap negative ones; int64 ids are checked before they are
  narrowed to int32, never wrapped). Outside ``jit`` the functions here raise ``IndexError``
  naming the leaf and the index; inside ``jit`` those entries are dropped, and `prepare_rows`
  counts them in its state so a training loop can raise an alarm.
* **Indices are never reinterpreted.** A transformation that maps over every array of a tree
  (``optax.clip``, ``optax.scale``, ...) would treat the indices as gradient values. Every
  consumer of a row-sparse leaf (every transformation here, `apply_updates`,
  ``RowSparse.__radd__``) checks them (`check_rows`): a changed dtype raises ``TypeError`` (at
  trace time, under ``jit`` too), changed values raise ``ValueError`` outside ``jit`` and are
  dropped inside it. The fix is `on_values`, which runs such a transformation on the rows'
  values only.
* **The rest of a chain.** The learning rate and weight decay act on the values of the touched
  rows only (`map_values`, `map_with_params`); `clip_by_global_norm` is the optax transformation
  for trees with row-sparse leaves; `apply_updates` (or ``optax.apply_updates``, through
  ``RowSparse.__radd__``) adds the rows to the parameters. Elementwise optax transformations run
  on the rows through `on_values`; `trace` is ``optax.trace`` with lazy rows; `multi_steps` is
  ``optax.MultiSteps``. optax transformations with per-coordinate state need dense leaves: put
  ``prepare_rows(lazy=False)`` before them (the row-sparse guide has the table).

Cost: a step sorts the K indices and reads and writes K rows of the parameters and of each
statistic; with donated buffers nothing of size :math:`V \times D` is copied or allocated
(``benchmarks/sparse_rows.py``, ``tests/test_sparse.py``).
"""

from __future__ import annotations

from typing import Any

from adaptive_tx.sparse._catch_up import CatchUp, CatchUpState, catch_up
from adaptive_tx.sparse._drift import drift_terms
from adaptive_tx.sparse._rows import (
    PrepareRowsState,
    apply_rows,
    apply_updates,
    clip_by_global_norm,
    global_norm,
    map_values,
    map_with_params,
    prepare_rows,
    row_mean,
    row_shape,
    trace,
)
from adaptive_tx.sparse._sharded import RowSharded, RowShardedStats, row_sharded
from adaptive_tx.sparse._type import RowSparse, check_rows, is_row_sparse, shape_view
from adaptive_tx.sparse._wrappers import MultiStepsState, multi_steps, on_values

__all__ = (
    "CatchUp",
    "CatchUpState",
    "Embed",
    "MultiStepsState",
    "PrepareRowsState",
    "RowSharded",
    "RowShardedStats",
    "RowSparse",
    "apply_rows",
    "apply_updates",
    "catch_up",
    "check_rows",
    "clip_by_global_norm",
    "drift_terms",
    "flush",
    "global_norm",
    "is_row_sparse",
    "map_values",
    "map_with_params",
    "multi_steps",
    "on_values",
    "prepare_rows",
    "row_mean",
    "row_shape",
    "row_sharded",
    "shape_view",
    "trace",
    "value_and_grad",
)

_FLAX_NAMES = ("Embed", "flush", "value_and_grad")


def __getattr__(name: str) -> Any:
    """`Embed` and `value_and_grad` need ``flax.nnx``: imported on first use, not with the package."""
    if name in _FLAX_NAMES:
        from adaptive_tx.sparse import _nnx

        return getattr(_nnx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
