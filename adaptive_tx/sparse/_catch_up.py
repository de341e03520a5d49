r"""Catch-up row-sparse updates: the dense trajectory at the cost of the touched rows.

Lazy row-sparse updates (the default, `adaptive_tx.sparse`) leave an untouched row as it is. Dense
training does not: at every step it applies the rule with a zero gradient to that row, so Adam's
moments decay and its momentum keeps moving the row. `catch_up` keeps one int32 per row, the step
at which the row was last brought up to date, and applies the skipped zero-gradient steps of a row
in closed form when the row is read again (the moments decay, the parameter drifts and decays:
`Drift` holds the closed forms and their error bounds).

Dense training also moves a row *before* the step that looks it up: for the same trajectory the
forward pass must read the caught-up rows (`CatchUp.rows`, or ``sparse.value_and_grad(..., view=)``
with `CatchUp.view`). Rows that were not looked up since are stale at the end of training:
`CatchUp.flush` brings every row up to date (once, :math:`O(V)`) before evaluation, export or a
checkpoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_tx.sparse._compact import Caught, ParamTrees, gather, path_key, write_order
from adaptive_tx.sparse._drift import Drift, _alias_forms, _check_args, drift_terms
from adaptive_tx.sparse._type import RowSparse, is_row_sparse, per_row

FLUSH_CHUNK = 8192
"""Rows caught up at once by `CatchUp.flush` (its temporary memory is this times J floats)."""


class CatchUpState(NamedTuple):
    r"""State of `catch_up`.

    Attributes:
      count: int32 scalar, the number of steps taken (saturating).
      inner: the state of the wrapped optimizer (its statistics of rows not read since their
        ``last_step`` are stale: read them through `CatchUp.flush`).
      last_step: params-shaped tree of int32 arrays of shape ``(V,)`` (one per row of each leaf;
        ``()`` for a scalar leaf): the step at which the row was last brought up to date.
      log_decay: float32 ``(2,)``: :math:`\sum_{\tau \le t} \log(1 - \eta_\tau\lambda_\tau)` as a
        compensated (Kahan) sum, hi and lo; zeros without weight decay.
      decay_mark: params-shaped tree of float32 ``(V, 2)``: ``log_decay`` (hi, lo) at each row's
        last step (None without weight decay). Kept as a pair: the difference of two sums near
        :math:`\eta\lambda t` must stay exact to float32 resolution of the decay over the gap,
        which one float32 per row would not be once :math:`\eta\lambda t \gg 1`.

    Example:
      >>> import adaptive_tx as atx
      >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
      >>> tx.init({"emb": jnp.zeros((4, 2))}).last_step["emb"]
      Array([0, 0, 0, 0], dtype=int32)
    """

    count: jax.Array
    inner: optax.OptState
    last_step: Any
    log_decay: jax.Array
    decay_mark: Any = None


def _leaf_rows(x):
    return jnp.shape(x)[:1]


def _is_state(node) -> bool:
    return isinstance(node, CatchUpState)


def _is_masked(node) -> bool:
    return isinstance(node, optax.MaskedNode)


def find_state(opt_state: Any, who: str) -> CatchUpState:
    """The one `CatchUpState` in ``opt_state`` (itself, or nested in a chain, ``optax.partition``,
    ``skip_nonfinite``, ...)."""
    found = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_state)[0]
    found = [(path, node) for path, node in found if _is_state(node)]
    if not found:
        raise ValueError(
            f"{who}: no CatchUpState in the optimizer state (a {type(opt_state).__name__}); pass "
            "the state of the optimizer that holds this sparse.catch_up transformation"
        )
    if len(found) > 1:
        paths = ", ".join(jax.tree_util.keystr(path) for path, _ in found)
        raise ValueError(
            f"{who}: the optimizer state holds {len(found)} CatchUpStates (at {paths}); pass the "
            "CatchUpState of this transformation itself"
        )
    return found[0][1]


def _replace_state(opt_state: Any, new: CatchUpState) -> Any:
    """``opt_state`` with its one `CatchUpState` replaced by ``new``."""
    return jax.tree.map(lambda x: new if _is_state(x) else x, opt_state, is_leaf=_is_state)


def _mask_like(state: CatchUpState, tree: Any) -> Any:
    """``tree`` (params-shaped) with ``optax.MaskedNode`` where the state has none of the leaf (an
    ``optax.partition`` / ``optax.masked`` group: the other leaves are another optimizer's)."""
    return jax.tree.map(
        lambda mark, x: mark if _is_masked(mark) else x, state.last_step, tree, is_leaf=_is_masked
    )


class CatchUp:
    """The transformation `catch_up` returns: ``init``/``update`` plus the row views.

    It is an Optax transformation (``optax.GradientTransformationExtraArgs``-like: ``init``,
    ``update(updates, state, params)``) for ``nnx.Optimizer`` and training loops, with three more
    functions: `rows` (the caught-up rows a forward pass must read), `view` (the same for
    ``sparse.value_and_grad``) and `flush` (every row up to date).

    Example:
      >>> import adaptive_tx as atx
      >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
      >>> params = {"emb": jnp.ones((3, 1))}
      >>> state = tx.init(params)
      >>> g = {"emb": atx.RowSparse(jnp.array([0]), jnp.ones((1, 1)), 3)}
      >>> u, state = tx.update(g, state, params)
      >>> atx.sparse.apply_updates(params, u)["emb"][:, 0]  # row 0 moved, as dense Adam's would
      Array([0.9, 1. , 1. ], dtype=float32)
    """

    def __init__(self, inner, drift: Drift, name: str):
        self.inner = optax.with_extra_args_support(inner)
        self.drift = drift
        self.form = drift.form
        self.weight_decay = drift.weight_decay
        self.name = name
        self._jitted_flush = jax.jit(self._flush)
        self._jitted_catch_up_rows = jax.jit(drift.catch_up_rows)
        self.init = self._init
        self.update = self._update

    # -- state ------------------------------------------------------------------------------
    def _init(self, params):
        last = jax.tree.map(lambda p: jnp.zeros(_leaf_rows(p), jnp.int32), params)
        marks = None
        if self.weight_decay is not None:
            marks = jax.tree.map(lambda p: jnp.zeros(_leaf_rows(p) + (2,), jnp.float32), params)
        return CatchUpState(
            count=jnp.zeros([], jnp.int32),
            inner=self.inner.init(params),
            last_step=last,
            log_decay=jnp.zeros(2, jnp.float32),
            decay_mark=marks,
        )

    def _stat_fields(self, inner_state):
        """The statistics of the scaling state (the chain's first), in the rule's order."""
        scaling = inner_state[0]
        if self.form.kind == "moments":
            fields = ("mu", "nu") + (("nu_max",) if scaling.nu_max is not None else ())
        elif self.form.kind == "ema":
            fields = ("nu",) + (("mu",) if scaling.mu is not None else ())
        else:
            fields = ()
        return scaling, fields

    def _settled_step(self):
        """`Drift._settled_step` of this optimizer (the step from which long gaps share row J)."""
        return self.drift._settled_step()

    # -- gathering, scattering --------------------------------------------------------------
    def _catch_up_leaf(self, state, leaf_index, rows, theta_rows, t_minus_1, log_g):
        """Gather the stats of ``rows`` of one leaf (None: every row), catch them up to
        ``t_minus_1``: ``(stats, trace, theta)`` as `Drift.catch_up_rows` returns them."""
        scaling, fields = self._stat_fields(state.inner)
        treedef = jax.tree.structure(state.last_step)
        get = lambda tree: treedef.flatten_up_to(tree)[leaf_index]  # noqa: E731
        gather_rows = gather(rows)
        stats_rows = tuple(gather_rows(get(getattr(scaling, f))) for f in fields)
        trace_rows = None
        if self.form.momentum is not None:
            trace_rows = gather_rows(get(state.inner[-1].trace))
        last = get(state.last_step)
        s = gather_rows(last)
        k = jnp.maximum(t_minus_1 - s, 0)
        if rows is not None:  # empty or out-of-range slots (read as zeros): nothing to catch up
            k = jnp.where((rows >= 0) & (rows < last.shape[0]), k, 0)
        log_p = jnp.zeros(k.shape, jnp.float32)
        if self.weight_decay is not None:
            mark = gather_rows(get(state.decay_mark))
            log_p = jnp.where(k > 0, (log_g[0] - mark[:, 0]) + (log_g[1] - mark[:, 1]), 0.0)
        # Jitted (inlined under an outer jit): eager calls would dispatch it op by op. Only the
        # gathered rows go in: a whole statistic passed in would be copied before the update
        # that writes it in place.
        return self._jitted_catch_up_rows(
            stats_rows, trace_rows, theta_rows.astype(jnp.float32), s, k, log_p
        )

    def _unchanged(self, state, leaf_index, theta_rows):
        """What `_catch_up_leaf` returns for a leaf whose rows are all current (same dtypes)."""
        scaling, fields = self._stat_fields(state.inner)
        treedef = jax.tree.structure(state.last_step)
        get = lambda tree: treedef.flatten_up_to(tree)[leaf_index]  # noqa: E731
        stats = tuple(get(getattr(scaling, f)).astype(jnp.float32) for f in fields)
        trace = None
        if self.form.momentum is not None:
            trace = get(state.inner[-1].trace).astype(jnp.float32)
        return stats, trace, theta_rows.astype(jnp.float32)

    def rows(self, state: CatchUpState, params: optax.Params, ids: Any) -> Any:
        r"""The caught-up rows that dense training would read: ``params[leaf][ids]``, up to date.

        Nothing is written; rows whose ids are out of range read as zeros. The gradient flows to
        the rows as if they were the table's (the catch-up offset is constant), so ``jax.grad`` of
        a loss of these rows is the row gradient to pack in a `RowSparse`.

        Args:
          state: the optimizer's state: the `CatchUpState`, or a state holding one (a chain,
            ``optax.partition``, ``skip_nonfinite``, ...).
          params: the parameters (stale rows included).
          ids: a tree like ``params`` with an int array of row ids at the leaves to look up and
            None elsewhere (None, too, at the leaves another optimizer of a partition updates).

        Returns:
          A tree like ``ids``: ``ids.shape + row shape`` arrays at the looked-up leaves.

        Example:
          >>> import adaptive_tx as atx
          >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
          >>> params = {"emb": jnp.ones((3, 1))}
          >>> state = tx.init(params)
          >>> g = {"emb": atx.RowSparse(jnp.array([0]), jnp.ones((1, 1)), 3)}
          >>> u, state = tx.update(g, state, params)
          >>> params = atx.sparse.apply_updates(params, u)
          >>> u, state = tx.update({"emb": atx.RowSparse(jnp.array([1]), jnp.ones((1, 1)), 3)},
          ...                      state, params)
          >>> params = atx.sparse.apply_updates(params, u)  # row 0 skipped step 2
          >>> tx.rows(state, params, {"emb": jnp.array([0])})["emb"]  # dense Adam: 0.9 - 0.067
          Array([[0.833]], dtype=float32)
        """
        state = find_state(state, "sparse.catch_up rows")
        params, ids = _mask_like(state, params), self._own_ids(state, ids)
        leaves, treedef = jax.tree.flatten(params)
        id_leaves = treedef.flatten_up_to(ids)
        out = []
        log_g = state.log_decay
        for index, (p, i) in enumerate(zip(leaves, id_leaves)):
            if i is None:
                out.append(None)
                continue
            flat = jnp.reshape(i, (-1,)).astype(jnp.int32)
            stale = p.at[flat].get(mode="fill", fill_value=0)
            _, _, theta = self._catch_up_leaf(state, index, flat, stale, state.count, log_g)
            # The value is the caught-up row; the gradient flows to the row read (identity).
            rows = theta.astype(p.dtype) + (stale - jax.lax.stop_gradient(stale))
            out.append(rows.reshape(jnp.shape(i) + p.shape[1:]))
        return jax.tree.map(
            lambda x: None if _is_masked(x) else x, treedef.unflatten(out), is_leaf=_is_masked
        )

    @staticmethod
    def _own_ids(state, ids):
        """``ids`` with ``optax.MaskedNode`` at the leaves this transformation does not update."""

        def one(path, mark, i):
            if not _is_masked(mark):
                return i
            if i is not None:
                raise ValueError(
                    f"sparse.catch_up rows: ids at {jax.tree_util.keystr(path)}, a leaf this "
                    "catch_up does not update (another optimizer of the partition does); pass "
                    "None there and read that leaf directly"
                )
            return mark

        return jax.tree_util.tree_map_with_path(one, state.last_step, ids, is_leaf=_is_masked)

    def view(self, state: CatchUpState) -> Callable:
        """The lookup for ``sparse.value_and_grad(f, view=...)``: ``(path, table, ids) -> rows``.

        ``path`` is the table's state path (a tuple of keys), matched against the paths of the
        leaves of ``state.last_step``. ``state`` is the `CatchUpState` or a state holding one (a
        chain, ``optax.partition``, ``skip_nonfinite``, ...; an ``nnx.Optimizer``'s
        ``nnx.as_pure(optimizer.opt_state)``).

        Example:
          >>> import adaptive_tx as atx
          >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
          >>> state = tx.init({"emb": jnp.ones((3, 1))})
          >>> tx.view(state)(("emb",), jnp.ones((3, 1)), jnp.array([2]))
          Array([[1.]], dtype=float32)
        """
        state = find_state(state, "sparse.catch_up view")
        with_paths = jax.tree_util.tree_flatten_with_path(state.last_step)[0]
        index_of = {path_key(path): i for i, (path, _) in enumerate(with_paths)}

        def lookup(path, table, ids):
            key = path_key(path)
            if key not in index_of:
                raise ValueError(
                    f"sparse.catch_up view: no table {path!r} in the optimizer state (its tables: "
                    f"{sorted(index_of)}); pass the path of the table (nnx: the module path plus "
                    "'embedding') that the optimizer was built for"
                )
            flat = jnp.reshape(ids, (-1,)).astype(jnp.int32)
            stale = jnp.take(table, flat, axis=0)
            _, _, theta = self._catch_up_leaf(
                state, index_of[key], flat, stale, state.count, state.log_decay
            )
            rows = theta.astype(table.dtype) + (stale - jax.lax.stop_gradient(stale))
            return rows.reshape(jnp.shape(ids) + table.shape[1:])

        return lookup

    # -- update -----------------------------------------------------------------------------
    def _update(self, updates, state, params=None, **extra_args):
        """Catch up the rows the gradient touches, then one step of the wrapped optimizer on them.

        Each row-sparse leaf's rows (and each dense leaf, if row-sparse steps left rows of it
        stale) are gathered once, caught up, and handed to the wrapped optimizer as a dense
        ``[K, ...]`` leaf (its statistics as ``[K, ...]`` rows, its parameters the caught-up
        rows); its new statistics are scattered back once. The update is the wrapped step's plus
        the catch-up's move of the parameter rows.
        """
        if params is None:
            raise ValueError(
                "sparse.catch_up needs the params (the skipped steps move the rows): call "
                "update(updates, state, params)"
            )
        leaves, treedef = jax.tree.flatten(updates, is_leaf=is_row_sparse)
        p_leaves = treedef.flatten_up_to(params)
        caught = [
            self._caught_leaf(state, index, g, p)
            for index, (g, p) in enumerate(zip(leaves, p_leaves))
        ]
        inner = ParamTrees(state.inner, treedef, p_leaves)
        compact_inner = inner.map(caught)
        compact_grads = [g if c is None else c.grad for g, c in zip(leaves, caught)]
        compact_params = [
            p if c is None else c.theta.astype(p.dtype) for p, c in zip(p_leaves, caught)
        ]
        compact_updates, compact_inner = self.inner.update(
            treedef.unflatten(compact_grads), compact_inner, treedef.unflatten(compact_params),
            **extra_args,
        )
        new_inner = inner.expand(compact_inner, caught)
        new_log = self._next_log_decay(state)
        u_leaves = treedef.flatten_up_to(compact_updates)
        out = [u if c is None else c.update(u) for u, c in zip(u_leaves, caught)]
        t = optax.safe_increment(state.count)
        last = treedef.flatten_up_to(state.last_step)
        new_last = [x if c is None else c.scatter(x, t) for x, c in zip(last, caught)]
        new_marks = None
        if state.decay_mark is not None:
            marks = treedef.flatten_up_to(state.decay_mark)
            new_marks = [x if c is None else c.scatter(x, new_log) for x, c in zip(marks, caught)]
            new_marks = treedef.unflatten(new_marks)
        return treedef.unflatten(out), CatchUpState(
            count=t,
            inner=new_inner,
            last_step=treedef.unflatten(new_last),
            log_decay=new_log,
            decay_mark=new_marks,
        )

    def _caught_leaf(self, state, index, g, p) -> Caught | None:
        """One leaf's rows gathered and caught up to the state's step (None: a scalar leaf)."""
        t_minus_1, log_g = state.count, state.log_decay
        if is_row_sparse(g):
            g = g.coalesce()
            rows = g.indices
            theta_rows = p.at[rows].get(mode="fill", fill_value=0)
            stats, trace, theta = self._catch_up_leaf(
                state, index, rows, theta_rows, t_minus_1, log_g
            )
            grad, ok = g.values, g.in_range()
        elif jnp.ndim(p) >= 1:
            # A dense gradient: its rows are current unless row-sparse steps left some stale.
            rows, theta_rows, grad, ok = None, p, g, None
            stats, trace, theta = jax.lax.cond(
                jnp.any(jax.tree.leaves(state.last_step)[index] < t_minus_1),
                lambda: self._catch_up_leaf(state, index, None, p, t_minus_1, log_g),
                lambda: self._unchanged(state, index, p),
            )
        else:
            return None
        _, fields = self._stat_fields(state.inner)
        known = {(0, f): x for f, x in zip(fields, stats)}
        if trace is not None:
            known[(len(state.inner) - 1, "trace")] = trace
        written = None if rows is None else write_order(rows, _leaf_rows(p)[0], g, theta)
        return Caught(g, rows, ok, grad, theta_rows, theta, known, written)

    def _next_log_decay(self, state):
        """``log_decay`` after this step: the Kahan sum plus log(1 − η_t λ_t)."""
        log_g = state.log_decay
        if self.weight_decay is None:
            return log_g
        # Kahan: hi + lo carries the sum of log(1 - lr wd) to float32 resolution of each term.
        y = self.drift.decay_step(state.count) - log_g[1]
        hi = log_g[0] + y
        lo = (hi - log_g[0]) - y
        return jnp.stack([hi, lo])

    # -- flush ------------------------------------------------------------------------------
    def flush(self, state: optax.OptState, params: optax.Params):
        """Every row brought up to the state's step: ``(params, state)`` as dense training has them.

        :math:`O(V)` once (in chunks of `FLUSH_CHUNK` rows), for evaluation, export, tied
        weights or a checkpoint that another optimizer will read. ``state`` is the `CatchUpState`
        or a state holding one (a chain, ``optax.partition``, ``skip_nonfinite``, ...): the
        returned state is the same tree with that `CatchUpState` flushed, and the parameters
        another optimizer of a partition updates are returned as they are.

        Example:
          >>> import adaptive_tx as atx
          >>> tx = atx.sparse.catch_up(atx.adam, 0.1)
          >>> params = {"emb": jnp.ones((3, 1))}
          >>> state = tx.init(params)
          >>> for ids in ([0], [1], [1]):
          ...     g = {"emb": atx.RowSparse(jnp.array(ids), jnp.ones((len(ids), 1)), 3)}
          ...     u, state = tx.update(g, state, params)
          ...     params = atx.sparse.apply_updates(params, u)
          >>> params, state = tx.flush(state, params)
          >>> state.last_step["emb"], params["emb"][0]
          (Array([3, 3, 3], dtype=int32), Array([0.7812], dtype=float32))
        """
        own = find_state(state, "sparse.catch_up flush")
        new_params, new_own = self._jitted_flush(own, _mask_like(own, params))
        new_params = jax.tree.map(
            lambda mark, p, q: p if _is_masked(mark) else q,
            own.last_step, params, new_params, is_leaf=_is_masked,
        )
        return new_params, _replace_state(state, new_own)

    def _flush(self, state: CatchUpState, params: optax.Params):
        leaves, treedef = jax.tree.flatten(params)
        scaling, fields = self._stat_fields(state.inner)
        stat_leaves = {f: treedef.flatten_up_to(getattr(scaling, f)) for f in fields}
        trace_leaves = None
        if self.form.momentum is not None:
            trace_leaves = treedef.flatten_up_to(state.inner[-1].trace)
        last = treedef.flatten_up_to(state.last_step)
        marks = None if state.decay_mark is None else treedef.flatten_up_to(state.decay_mark)
        new_leaves = []
        for index, p in enumerate(leaves):
            if jnp.ndim(p) < 1:
                new_leaves.append(p)
                continue
            num_rows = p.shape[0]
            chunk = min(FLUSH_CHUNK, num_rows)
            padded = -(-num_rows // chunk) * chunk
            blocks = jnp.arange(padded, dtype=jnp.int32).reshape(-1, chunk)

            def one(rows, index=index, p=p):
                theta_rows = p.at[rows].get(mode="fill", fill_value=0)
                return self._catch_up_leaf(
                    state, index, rows, theta_rows, state.count, state.log_decay
                )

            new_stats, new_trace, theta = jax.lax.map(one, blocks)
            flat = lambda x: x.reshape((padded,) + x.shape[2:])[:num_rows]  # noqa: E731
            new_leaves.append(flat(theta).astype(p.dtype))
            for f, r in zip(fields, new_stats):
                stat_leaves[f][index] = flat(r).astype(stat_leaves[f][index].dtype)
            if new_trace is not None:
                trace_leaves[index] = flat(new_trace).astype(trace_leaves[index].dtype)
            last[index] = jnp.full_like(last[index], state.count)
            if marks is not None:
                marks[index] = jnp.broadcast_to(state.log_decay, marks[index].shape)
        new_scaling = scaling._replace(**{f: treedef.unflatten(stat_leaves[f]) for f in fields})
        inner = (new_scaling,) + tuple(state.inner[1:])
        if trace_leaves is not None:
            inner = inner[:-1] + (inner[-1]._replace(trace=treedef.unflatten(trace_leaves)),)
        new_state = state._replace(
            inner=tuple(inner),
            last_step=treedef.unflatten(last),
            decay_mark=None if marks is None else treedef.unflatten(marks),
        )
        return treedef.unflatten(new_leaves), new_state


def catch_up(alias: Callable, *args: Any, **kwargs: Any) -> CatchUp:
    r"""An optimizer whose row-sparse updates equal its dense ones: untouched rows caught up.

    ``catch_up(atx.adamw, 1e-3, weight_decay=1e-2)`` is ``atx.adamw(1e-3, weight_decay=1e-2)``
    with *catch-up* semantics for `RowSparse` gradient leaves instead of lazy ones: each row
    remembers the step it was last brought up to date; when a row is read again after :math:`k`
    skipped steps, the :math:`k` zero-gradient steps dense training would have applied are applied
    in closed form (the moments decay, the parameter drifts and decays, see
    `Drift`), then the current step. Dense gradient leaves are updated as by the alias.

    Lazy stays the default (the alias itself): catch-up costs one int32 per row (one more float32
    with weight decay), about :math:`J \times 14` operations per touched row for the Adam family,
    and a forward pass that reads caught-up rows (`CatchUp.rows` / `CatchUp.view`) and a `flush`
    before evaluation; lazy updates need none of that and are what torch SparseAdam and TF
    LazyAdam compute.

    Supported (closed forms of the skipped steps): ``adagrad``, ``rowwise_adagrad`` (nothing to
    catch up), ``rmsprop`` (centered, momentum, nesterov), ``adam``, ``adamw``, ``nadam``,
    ``nadamw``, ``amsgrad``, with constant or scheduled learning rates and weight decays. Other
    aliases, ``eps_root != 0``, a weight-decay ``mask`` and non-float statistic storage raise
    ``ValueError``. Use it as the whole optimizer (transformations after it would see the
    catch-up offsets as updates); `sparse.clip_by_global_norm` may come before it in a chain.

    Reference: lazy updates, ``torch.optim.SparseAdam``,
    https://pytorch.org/docs/stable/generated/torch.optim.SparseAdam.html ; Adam, Kingma & Ba
    2014, https://arxiv.org/abs/1412.6980

    Args:
      alias: one of the supported optimizers of this library (the function, e.g. ``atx.adam``).
      \*args, \*\*kwargs: its arguments, as the alias takes them.

    Returns:
      A `CatchUp` transformation (``init``, ``update(updates, state, params)``, ``rows``,
      ``view``, ``flush``) whose state is `CatchUpState`.

    Example:
      >>> import adaptive_tx as atx, optax
      >>> params = {"emb": jnp.ones((3, 1))}
      >>> tx, dense = atx.sparse.catch_up(atx.adam, 0.1), optax.adam(0.1)
      >>> state, dense_state, dense_params = tx.init(params), dense.init(params), params
      >>> for ids in ([0], [1], [1], [0]):
      ...     g = {"emb": atx.RowSparse(jnp.array(ids), jnp.ones((1, 1)), 3)}
      ...     u, state = tx.update(g, state, params)
      ...     params = atx.sparse.apply_updates(params, u)
      ...     u, dense_state = dense.update({"emb": g["emb"].todense()}, dense_state)
      ...     dense_params = optax.apply_updates(dense_params, u)
      >>> float(abs(params["emb"][0] - dense_params["emb"][0])[0]) < 1e-6
      True
    """
    forms = _alias_forms()
    name = getattr(alias, "__name__", repr(alias))
    if alias not in forms:
        supported = ", ".join(sorted(f.__name__ for f in forms))
        raise ValueError(
            f"sparse.catch_up: {name} has no closed form for its skipped steps here (catch-up "
            f"supports {supported}); use its lazy row-sparse updates (the optimizer itself) or "
            "dense ones (atx.sparse.prepare_rows(lazy=False) first in the chain)"
        )
    bound = inspect.signature(alias).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    _check_args(name, arguments)
    form = forms[alias](arguments)
    inner = alias(*args, **kwargs)
    weight_decay = arguments.get("weight_decay")
    if isinstance(weight_decay, (int, float)) and weight_decay == 0:
        weight_decay = None
    num_terms = 1
    if form.kind == "moments":
        num_terms = drift_terms(float(arguments["b1"]), float(arguments["b2"]))
    drift = Drift(form, arguments["learning_rate"], weight_decay, num_terms)
    return CatchUp(inner, drift, name)
